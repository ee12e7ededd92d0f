"""Benchmarks (`make bench`, `make bench-quality`): measurements, not tests."""
import models  # noqa: F401 - sets TensorFlow's environment before anything imports it
