"""Sweeps: Hydra's multirun syntax, run as cached DVC experiments and grouped in MLflow."""
