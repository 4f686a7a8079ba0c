"""Scoring models on the frozen test split: tasks, prompting methods, the prompt search."""
