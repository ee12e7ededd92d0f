"""Serving: a TF-Serving-compatible local server and gRPC/REST clients."""
import models  # noqa: F401 - sets TensorFlow's environment before anything imports it
