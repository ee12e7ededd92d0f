"""The Trainer's strategy: MultiWorkerMirroredStrategy under TF_CONFIG, chief-only export."""
import json
import os
import socket
import subprocess
import sys

import pytest

from models import trainer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# In a fresh process: a collective strategy configures TensorFlow's runtime for good.
STRATEGY = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
from models import model  # first: the models package sets TensorFlow's environment
import tensorflow as tf
from models import trainer
from models.settings import ModelSettings
strategy = trainer.distribution_strategy()
with strategy.scope():
    m = model.build_model(10, ModelSettings(embedding_dim=4, rnn_units=8))
print(json.dumps({"multi_worker": isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy),
                  "mirrored": isinstance(strategy, tf.distribute.MirroredStrategy),
                  "replicas": strategy.num_replicas_in_sync,
                  "chief": trainer.is_chief(), "variable": type(m.weights[0]).__name__}))
"""


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _strategy_with(tf_config):
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    env.pop("TF_CONFIG", None)
    if tf_config is not None:
        env["TF_CONFIG"] = json.dumps(tf_config)
    result = subprocess.run([sys.executable, "-c", STRATEGY, REPO], capture_output=True,
                            text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_tf_config_cluster_means_multi_worker_mirrored():
    out = _strategy_with({"cluster": {"worker": [f"127.0.0.1:{_free_port()}"]},
                          "task": {"type": "worker", "index": 0}})
    assert out["multi_worker"] and not out["mirrored"]
    assert out["replicas"] == 1 and out["chief"] is True
    # Variables created in scope are mirrored across the workers' replicas.
    assert out["variable"] == "MirroredVariable"


def test_without_tf_config_one_cpu_uses_the_default_strategy():
    out = _strategy_with(None)
    assert not out["multi_worker"] and not out["mirrored"] and out["replicas"] == 1
    assert out["chief"] is True and out["variable"] != "MirroredVariable"


@pytest.mark.parametrize("tf_config, chief", [
    ({"cluster": {"chief": ["a:1"], "worker": ["b:1"]}, "task": {"type": "chief", "index": 0}},
     True),
    ({"cluster": {"chief": ["a:1"], "worker": ["b:1"]}, "task": {"type": "worker", "index": 0}},
     False),
    ({"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 0}}, True),
    ({"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 1}}, False),
])
def test_only_the_chief_exports(monkeypatch, tf_config, chief):
    monkeypatch.setenv("TF_CONFIG", json.dumps(tf_config))
    assert trainer.is_chief() is chief


def test_a_broken_tf_config_is_named(monkeypatch):
    monkeypatch.setenv("TF_CONFIG", "{cluster:")
    with pytest.raises(ValueError, match="TF_CONFIG is not valid JSON"):
        trainer.distribution_strategy()
