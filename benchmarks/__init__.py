"""Benchmarks: each speed or quality claim in BENCHMARKS.md is produced by a module here."""
