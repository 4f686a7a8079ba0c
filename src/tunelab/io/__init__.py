"""Atomic writes, JSONL and files."""
