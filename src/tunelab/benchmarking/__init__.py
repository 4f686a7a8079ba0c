"""What a variant costs to serve: latency, throughput, memory, the environment."""
