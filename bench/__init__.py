"""Reproducible benchmarks of gar-proxy against the distribution registry's proxy mode."""
