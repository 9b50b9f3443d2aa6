"""Hypothesis writes no example database into the work tree: each run draws afresh, and a
failure prints the example that reproduces it."""

from hypothesis import settings

settings.register_profile("hostile", database=None, derandomize=False)
settings.load_profile("hostile")
