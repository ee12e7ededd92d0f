"""Model code: features, preprocessing (tf.Transform), the RNN, its export and metrics.

The one place that sets the environment TensorFlow reads when it is imported. `models` is
the bottom of the project's imports, and each other package (components, pipeline,
serving, bench) imports it first in its own __init__, so every entry point — `textgen`,
the Airflow DAG file, TFX running a component by dotted path, `python -m bench...`,
pytest, a bare `import models.export` — sets it before TensorFlow loads.
"""
import os

# tensorflow_transform needs Keras 2 (tf_keras); tf.keras picks its version on first use.
os.environ["TF_USE_LEGACY_KERAS"] = "1"
# TensorFlow's C++ INFO and WARNING lines are not for the user; ERRORs still show (in a run,
# in its log file: pipeline/logs.py).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
