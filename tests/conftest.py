"""Shared test fixtures."""
import dataclasses
import fcntl
import glob
import os
import shutil
import subprocess
import sys

import pytest

import models  # noqa: F401 - sets TensorFlow's environment (TF_USE_LEGACY_KERAS) first

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.path.join(os.path.dirname(REPO), "shared", "data")

# The files that run whole pipelines, longest first (`make test`'s durations on a 2-core AMX
# Xeon, 2026-12-06: Airflow's ticks 704 s, the end-to-end file's runs 30-205 s each, the
# installed Beam run 287 s, overlapping runs 239 s, ...). `make test` gives each
# pytest-xdist worker a file at a time in collection order (--no-loadscope-reorder: xdist
# would otherwise start the files with the most tests, leaving these few-test, long files
# to the end, one worker running the last of them alone); started first, the short files
# fill in around them.
LONGEST_FIRST = ("test_airflow.py", "test_pipeline_e2e.py", "test_packaging.py",
                 "test_concurrent_runs.py", "test_faults_run.py", "test_distribution.py",
                 "test_metadata_mysql.py", "test_reliability_load.py", "test_pusher.py")


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    # Stable: a file's own tests keep their order, and so do the other files.
    items.sort(key=lambda item: rank.get(item.path.name, len(LONGEST_FIRST)))


# A small vocabulary with a newline and a non-ASCII character, for models built in tests.
TINY_VOCAB = list("abcdefgh \n:é")


def build_tiny_model(vocab=None, rnn_layers=1, cell="gru", seed=0):
    import tf_keras
    from models import features, model
    from models.settings import ModelSettings
    vocab = vocab or TINY_VOCAB
    tf_keras.utils.set_random_seed(seed)
    return model.build_model(len(vocab) + features.NUM_RESERVED_IDS, ModelSettings(
        embedding_dim=8, rnn_units=16, rnn_layers=rnn_layers, cell=cell, dropout=0.0))


def export_tiny_model(export_dir, vocab=None, mode="stream", rnn_layers=1, cell="gru", seed=0):
    """Exports an untrained tiny model; returns the Generator (for in-process comparisons)."""
    from models import export
    vocab = vocab or TINY_VOCAB
    return export.save(build_tiny_model(vocab, rnn_layers, cell, seed), vocab, mode,
                       str(export_dir))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A servable SavedModel (stream mode, one GRU layer, untrained), exported once."""
    path = tmp_path_factory.mktemp("tiny_model") / "model"
    export_tiny_model(path)
    return str(path)


@pytest.fixture(scope="session")
def tiny_serving_dir(tmp_path_factory, tiny_model_dir):
    """TF Serving layout: <dir>/1/ holding the tiny model."""
    import shutil
    base = tmp_path_factory.mktemp("serving")
    shutil.copytree(tiny_model_dir, base / "1")
    return str(base)


_FRESH_PROCESS = r"""
import json, sys
import tensorflow as tf
m = tf.saved_model.load(sys.argv[1])
out = {}
for batch in (1, 5):
    prompts = tf.constant(["ROMEO:", "a", "hé hé", "b\n", "cdefg"][:batch])
    g = m.signatures["generate"](prompts=prompts, num_chars=tf.fill([batch], 12),
        temperature=tf.fill([batch], 0.7), top_k=tf.fill([batch], 0),
        top_p=tf.fill([batch], 1.0), seed=tf.fill([batch], 9))
    s = m.signatures["serving_default"](chars=prompts, states=tf.zeros([batch, STATE]),
        temperature=tf.fill([batch], 1.0), seed=tf.fill([batch], 0))
    out[batch] = {"text": [t.decode() for t in g["text"].numpy()],
                  "next": [c.decode() for c in s["next_chars"].numpy()],
                  "states": list(s["states"].shape)}
out["modules"] = [m for m in ("tfx", "tensorflow_transform") if m in sys.modules]
print(json.dumps(out))
"""


def call_signatures_in_fresh_process(model_dir, state_size):
    """Loads a SavedModel in a new Python (TensorFlow only) and calls both generation
    signatures at batch 1 and 5; asserts neither TFX nor tf.Transform got imported."""
    import json
    import subprocess
    script = _FRESH_PROCESS.replace("STATE", str(state_size))
    result = subprocess.run([sys.executable, "-c", script, model_dir], capture_output=True,
                            text=True, cwd="/", env={**os.environ, "PYTHONPATH": ""}, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out.pop("modules") == []
    return out


@dataclasses.dataclass
class Installed:
    """textgen as a deployment has it: the wheel and the environment it was installed in."""
    wheel: str
    sdist: str
    env: str

    def bin(self, name: str) -> str:
        return os.path.join(self.env, "bin", name)


def _uv() -> str:
    """uv as `make install` found or bootstrapped it."""
    found = shutil.which("uv") or os.path.join(REPO, ".tools", "bin", "uv")
    assert os.path.exists(found), "uv not found: run `make install` first"
    return found


def _run(cmd, cwd):
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=str(cwd),
                            env={**os.environ, "UV": _uv()}, timeout=1800)
    assert result.returncode == 0, f"{cmd}:\n{result.stdout}{result.stderr}"


@pytest.fixture(scope="session")
def installed(tmp_path_factory) -> Installed:
    """A wheel built from this checkout (through its sdist, as `uv build` does) and
    installed non-editable by deploy/install.sh, the image's own install step, into a fresh
    environment: once per test session, shared by pytest-xdist's workers."""
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    with open(shared / "installed.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        dist, env = shared / "dist", shared / "installed"
        if not (env / ".complete").exists():
            shutil.rmtree(dist, ignore_errors=True)
            shutil.rmtree(env, ignore_errors=True)
            _run([_uv(), "build", "--quiet", "--out-dir", str(dist), REPO], shared)
            _run([os.path.join(REPO, "deploy", "install.sh"), str(env),
                  *glob.glob(str(dist / "*.whl")), os.path.join(REPO, "requirements", "lock.txt")],
                 shared)
            (env / ".complete").touch()
    [wheel] = glob.glob(str(dist / "*.whl"))
    [sdist] = glob.glob(str(dist / "*.tar.gz"))
    return Installed(wheel=wheel, sdist=sdist, env=str(env))


def shared_data(name):
    path = os.path.join(SHARED_DATA, name)
    if not os.path.exists(path):
        pytest.skip(f"{path} not present (../shared/data beside the clone)")
    return path


sys.path.insert(0, REPO)
