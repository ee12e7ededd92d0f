"""Custom TFX components: ExampleGen over raw text and an atomic, de-duplicating Pusher."""
import models  # noqa: F401 - sets TensorFlow's environment before anything imports it
