"""Benchmarks: each module is one command (`python -m bench.<name>`) writing its numbers to bench/results/."""
