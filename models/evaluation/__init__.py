"""Offline evaluation of models against labelled benchmarks (NAB for anomaly detectors)."""
