"""The fine-tuning strategies and the train stage's trainer, callbacks and checkpoints."""
