"""The TFX pipeline: settings, wiring, the runners and their `textgen` subcommands."""
import models  # noqa: F401 - sets TensorFlow's environment before anything imports it
