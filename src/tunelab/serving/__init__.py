"""Serving a deployed variant behind an OpenAI-compatible API on a real engine, and load-testing it."""
