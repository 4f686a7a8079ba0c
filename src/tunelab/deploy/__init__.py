"""The deployment methods: quantized, pruned and exported variants of the trained model."""
