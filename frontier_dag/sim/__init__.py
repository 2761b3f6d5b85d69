"""The cluster simulator: requests, replicas, KV memory, transfers and backpressure over time."""
