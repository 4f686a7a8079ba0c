"""Prompt templates, chat templates and tokenization with the loss mask."""
