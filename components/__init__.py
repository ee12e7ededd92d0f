"""Custom TFX components: ExampleGen over raw text and an atomic, de-duplicating Pusher."""
import os

# tensorflow_transform needs Keras 2; this must be set before TensorFlow is imported.
os.environ["TF_USE_LEGACY_KERAS"] = "1"
