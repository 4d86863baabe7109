"""Benchmark: transfer paths side by side over an emulated link (``python -m tests.devtools.bench``)."""
