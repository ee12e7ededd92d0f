"""The TFX pipeline: settings, wiring, the runners and the `textgen` command line."""
import models  # noqa: F401 - sets TensorFlow's environment before anything imports it
