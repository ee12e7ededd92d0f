"""The TFX pipeline: settings, wiring, the local runner and the `textgen` command line."""
import os

# tensorflow_transform needs Keras 2; this must be set before TensorFlow is imported.
os.environ["TF_USE_LEGACY_KERAS"] = "1"
