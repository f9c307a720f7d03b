"""Benchmarks: `python -m cgraph.bench.NAME`; each writes notebooks/results/NAME.{json,md}."""
