"""Loading every model variant, and the base model from its source."""
