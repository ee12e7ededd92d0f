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


def train_with_onednn() -> None:
    """In a process that trains, before TensorFlow loads: oneDNN's kernels, unless the
    user set TF_ENABLE_ONEDNN_OPTS.

    TensorFlow turns oneDNN on by itself only on CPUs with AVX512_VNNI, AVX512_BF16 or
    AMX. On AVX2-only CPUs, where it stays off, a training step costs 0.56-0.80x the CPU
    time with it, but generating runs at 0.5-0.8x the speed (docs/benchmarks.md, the
    AVX2-only rows): so the processes that train turn it on and `textgen serve` does not.
    """
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
