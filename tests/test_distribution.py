"""The Trainer's strategy: MultiWorkerMirroredStrategy under TF_CONFIG, chief-only export,
and run_fn as two real workers on loopback against one worker alone."""
import dataclasses
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


# --- Two real workers ---------------------------------------------------------------
# The Trainer's run_fn in worker processes, fed as TFX feeds it (FnArgs, a DataAccessor
# over tf.Example files, a Transform output). The harness records, per replica step,
# which records the model was given: Keras' fit shows only all-reduced numbers.
RUN_FN = r"""
import json, os, sys
repo, transform_dir, examples_dir, root, config_path, out_path = sys.argv[1:7]
sys.path.insert(0, repo)
from models import model as char_model  # first: the models package sets TensorFlow's environment
import tensorflow as tf
from tfx.components.trainer import fn_args_utils
from tfx_bsl.public import tfxio
from models import trainer

seen = {"train": [], "eval": []}
compile_model = char_model.compile_model


def compile_and_record(model, *args, **kwargs):
    compile_model(model, *args, **kwargs)
    def recording(step, kind):
        def step_and_record(data):
            tf.py_function(lambda ids: seen[kind].append(ids.numpy().tolist()), [data[0]], [])
            return step(data)
        return step_and_record
    model.train_step = recording(model.train_step, "train")
    model.test_step = recording(model.test_step, "eval")
    return model


char_model.compile_model = compile_and_record
# A worker slower to back up its epoch than the chief (on a loaded machine, one is): the
# chief must not delete the backup while this worker still writes into it.
if os.environ.get("SLOW_BACKUP") == "1":
    import time
    import tf_keras
    back_up = tf_keras.callbacks.BackupAndRestore.on_epoch_end

    def slow_back_up(self, epoch, logs=None):
        time.sleep(2)
        back_up(self, epoch, logs)
    tf_keras.callbacks.BackupAndRestore.on_epoch_end = slow_back_up
fit = trainer.fit
record = {}


def fit_and_keep(*args, **kwargs):
    record.update(fit(*args, **kwargs))
    return record


trainer.fit = fit_and_keep
with open(config_path) as f:
    custom_config = json.load(f)
os.makedirs(root + "/Trainer/model_run/7", exist_ok=True)  # as TFX's executor does
# What TFX's Trainer executor hands run_fn; on a cluster every worker gets the same.
fn_args = fn_args_utils.FnArgs(
    train_files=[examples_dir + "/Split-train/*"], eval_files=[examples_dir + "/Split-eval/*"],
    transform_output=transform_dir, transform_graph_path=transform_dir,
    serving_model_dir=root + "/Trainer/model/7/Format-Serving",
    model_run_dir=root + "/Trainer/model_run/7", custom_config=custom_config,
    data_accessor=fn_args_utils.DataAccessor(
        tf_dataset_factory=lambda files, options, schema: tfxio.TFExampleRecord(
            file_pattern=files, schema=schema).TensorFlowDataset(options),
        record_batch_factory=None, data_view_decode_fn=None))
trainer.run_fn(fn_args)
with open(out_path, "w") as f:
    json.dump({"seen": seen, "record": record, "chief": trainer.is_chief()}, f)
"""

# Two workers over the same global batches as one: the eval losses measured equal to
# 9e-8 relative (float summation order in the all-reduce). Each worker training on the
# whole split instead of its half moved them by 5% after one epoch, 15% after two.
# 1e-4 is three orders above the noise and far below such a difference.
LOSS_TOLERANCE = 1e-4
SEQ_LENGTH, TRAIN_RECORDS, EVAL_RECORDS, GLOBAL_BATCH, EPOCHS = 20, 64, 16, 8, 2
WORDS = ("the", "king", "queen", "sword", "night", "sleep", "crown", "and", "of", "my")


def _windows(count, rng):
    text = " ".join(rng.choice(WORDS) for _ in range(count * SEQ_LENGTH))
    return [text[i * (SEQ_LENGTH + 1):(i + 1) * (SEQ_LENGTH + 1)] for i in range(count)]


@pytest.fixture(scope="module")
def transformed(tmp_path_factory):
    """A Transform output (vocabulary, transform graph) and transformed tf.Examples from
    text made here: every train record distinct, so each can be told apart."""
    import random
    import tensorflow as tf
    import tensorflow_transform as tft
    import tensorflow_transform.beam as tft_beam
    from tensorflow_transform.tf_metadata import dataset_metadata, schema_utils
    from models import features, preprocessing
    tmp = tmp_path_factory.mktemp("transformed")
    rng = random.Random(5)
    splits = {"train": _windows(TRAIN_RECORDS, rng), "eval": _windows(EVAL_RECORDS, rng)}
    assert len(set(splits["train"])) == TRAIN_RECORDS
    metadata = dataset_metadata.DatasetMetadata(schema_utils.schema_from_feature_spec(
        {features.TEXT_KEY: tf.io.FixedLenFeature([1], tf.string)}))
    data = [{features.TEXT_KEY: [t.encode()]} for t in splits["train"]]
    with tft_beam.Context(temp_dir=str(tmp / "tmp")):
        transform_fn = (data, metadata) | tft_beam.AnalyzeDataset(preprocessing.preprocessing_fn)
        _ = transform_fn | tft_beam.WriteTransformFn(str(tmp / "transform"))
    output = tft.TFTransformOutput(str(tmp / "transform"))
    ids_by_split = {}
    for split, texts in splits.items():
        ids = output.transform_raw_features(
            {features.TEXT_KEY: tf.constant([[t] for t in texts])})[features.IDS_KEY]
        ids_by_split[split] = tf.sparse.to_dense(ids).numpy().tolist()
        os.makedirs(tmp / "examples" / f"Split-{split}")
        with tf.io.TFRecordWriter(str(tmp / "examples" / f"Split-{split}" / "data.tfrecord")) as w:
            for row in ids_by_split[split]:
                w.write(tf.train.Example(features=tf.train.Features(feature={
                    features.IDS_KEY: tf.train.Feature(int64_list=tf.train.Int64List(
                        value=row))})).SerializeToString())
    return {"transform": str(tmp / "transform"), "examples": str(tmp / "examples"),
            "ids": ids_by_split}


def _custom_config(serving_dir, seed=3):
    from models.settings import ModelSettings, TrainSettings
    model = ModelSettings(embedding_dim=8, rnn_units=16, rnn_layers=1, cell="gru", dropout=0.0)
    # float32: the comparison with one worker is about the reduction, not bf16 rounding.
    # A budget never reached: its check, an all-reduce among the workers, runs every epoch,
    # and the learning rate decays over the epochs it projects (all of them), on every
    # worker alike.
    train = TrainSettings(epochs=EPOCHS, batch_size=GLOBAL_BATCH, learning_rate=1e-2,
                          patience=0, seed=seed, warm_start=False, precision="float32",
                          max_cpu_minutes=1e6, lr_schedule="cosine_budget")
    return {"model": dataclasses.asdict(model), "train": dataclasses.asdict(train),
            "mode": "stream", "serving_dir": str(serving_dir), "code_fingerprint": "test"}


def _start_run_fn(data, root, config_path, out_path, tf_config):
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    env.pop("TF_CONFIG", None)
    if tf_config is not None:
        env["TF_CONFIG"] = json.dumps(tf_config)
        if tf_config["task"]["index"] == 1:
            env["SLOW_BACKUP"] = "1"
    return subprocess.Popen([sys.executable, "-c", RUN_FN, REPO, data["transform"],
                             data["examples"], str(root), str(config_path), str(out_path)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def _variables(saved_model_dir):
    import tensorflow as tf
    reader = tf.train.load_checkpoint(os.path.join(saved_model_dir, "variables", "variables"))
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()
            if name.startswith("model/") and "OPTIMIZER" not in name}


def run_one_and_two_workers(data, tmp_path, seed=3):
    """run_fn alone (the default strategy) and as two workers of one cluster, at the same
    time; returns each process's harness output and the roots."""
    config_path = tmp_path / "custom_config.json"
    config_path.write_text(json.dumps(_custom_config(tmp_path / "no-blessed-model", seed)))
    ports = [_free_port(), _free_port()]
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    runs = {"one": _start_run_fn(data, tmp_path / "one", config_path, tmp_path / "one.json",
                                 None)}
    for index in (0, 1):
        runs[f"worker{index}"] = _start_run_fn(
            data, tmp_path / "two", config_path, tmp_path / f"worker{index}.json",
            {"cluster": cluster, "task": {"type": "worker", "index": index}})
    logs = {}
    for name, process in runs.items():
        try:
            logs[name], _ = process.communicate(timeout=1800)
        finally:
            process.kill()
    # Every failed process's log: a worker that fails first shows up as the other's
    # heartbeat timeout.
    failed = {name: process.returncode for name, process in runs.items() if process.returncode}
    assert not failed, "\n".join(f"{name} exited with {code}:\n{logs[name][-4000:]}"
                                  for name, code in failed.items())
    out = {}
    for name in runs:
        with open(tmp_path / f"{name}.json") as f:
            out[name] = json.load(f)
    return out


def _rows(batches):
    return [tuple(row) for batch in batches for row in batch]


def test_two_workers_share_the_global_batch_and_export_once(transformed, tmp_path):
    out = run_one_and_two_workers(transformed, tmp_path)
    one, w0, w1 = out["one"], out["worker0"], out["worker1"]
    assert one["chief"] and w0["chief"] and not w1["chief"]
    steps = EPOCHS * TRAIN_RECORDS // GLOBAL_BATCH
    # Each replica step took half the global batch; together, the batch one worker took
    # at that step; apart, nothing in common.
    assert len(one["seen"]["train"]) == len(w0["seen"]["train"]) == \
        len(w1["seen"]["train"]) == steps
    for step, (alone, first, second) in enumerate(zip(
            one["seen"]["train"], w0["seen"]["train"], w1["seen"]["train"])):
        assert len(alone) == GLOBAL_BATCH and len(first) == len(second) == GLOBAL_BATCH // 2
        assert sorted(_rows([first, second])) == sorted(_rows([alone])), f"step {step}"
        assert not set(_rows([first])) & set(_rows([second])), f"step {step}"
    # Per epoch, each worker's half of the train split; the eval split is shared out too.
    inputs = {tuple(row[:-1]) for row in transformed["ids"]["train"]}
    per_epoch = TRAIN_RECORDS // GLOBAL_BATCH
    for epoch in range(EPOCHS):
        halves = [set(_rows(w["seen"]["train"][epoch * per_epoch:(epoch + 1) * per_epoch]))
                  for w in (w0, w1)]
        assert len(halves[0]) == len(halves[1]) == TRAIN_RECORDS // 2
        assert halves[0] | halves[1] == inputs and not halves[0] & halves[1]
    eval_rows = [sorted(_rows(w["seen"]["eval"])) for w in (w0, w1)]
    assert len(eval_rows[0]) == len(eval_rows[1]) == EPOCHS * EVAL_RECORDS // 2
    assert sorted(eval_rows[0] + eval_rows[1]) == sorted(_rows(one["seen"]["eval"]))

    # Only the chief's export is where the Pusher looks; the other worker's is its own.
    two = tmp_path / "two" / "Trainer"
    serving = two / "model" / "7" / "Format-Serving"
    # Each worker's reports are its own too: written to one file at once, they collided.
    run_dir = two / "model_run" / "7"
    worker1_export = run_dir / "worker-1" / "export"
    assert (serving / "saved_model.pb").is_file() and (worker1_export / "saved_model.pb").is_file()
    assert not (run_dir / "worker-0").exists()
    # The chief deleted the backup after the slower worker had written its last epoch there
    # (before, that worker failed mid-write, or recreated the folder after the delete).
    assert not list((two / "backup").iterdir())
    for report in ("training.json", "warm_start.json", "epochs.json"):
        assert (run_dir / report).is_file() and (run_dir / "worker-1" / report).is_file()
    chief_weights, worker1_weights = _variables(str(serving)), _variables(str(worker1_export))
    assert chief_weights and chief_weights.keys() == worker1_weights.keys()
    for name, value in chief_weights.items():
        assert (value == worker1_weights[name]).all(), f"{name} differs between the workers"

    # The all-reduced eval loss: the same on both workers, and as one worker's over the
    # same global batches (see LOSS_TOLERANCE).
    losses = {name: [e["val_loss"] for e in run["record"]["epochs"]]
              for name, run in out.items()}
    assert losses["worker0"] == losses["worker1"]
    assert losses["worker0"] == pytest.approx(losses["one"], rel=LOSS_TOLERANCE, abs=0)
    # Training moved: the comparison is not of two untrained models.
    assert losses["one"][-1] < losses["one"][0]
