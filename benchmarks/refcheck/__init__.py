"""The reference check's parts (``benchmarks/reference_check.py`` is its command line)."""
