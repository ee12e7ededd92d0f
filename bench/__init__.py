"""Benchmarks (`make bench`, `make bench-quality`): measurements, not tests."""
import os

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
