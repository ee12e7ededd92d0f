"""Serving: a TF-Serving-compatible local server and gRPC/REST clients."""
import os

# tensorflow_transform needs Keras 2; this must be set before TensorFlow is imported.
os.environ["TF_USE_LEGACY_KERAS"] = "1"
