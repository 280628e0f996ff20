"""Benchmark tools (compare, posthoc_table, throughput, the GPU check) and one-off studies (studies/).

Importable as `benchmarks.*` after `pip install -e .`, so `python benchmarks/<script>.py` needs no path set-up.
"""
