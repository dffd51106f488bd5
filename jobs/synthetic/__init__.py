"""Synthetic RAW deliveries for the demo, the tests and the benchmark (deterministic per seed)."""
