"""Faults during a run: kill -9 while training and while pushing leave nothing corrupt."""
import glob
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

from components import pusher
from pipeline import metadata
import textgen_cli
from conftest import REPO

TEXTGEN = os.path.join(os.path.dirname(sys.executable), "textgen")


def corpus(path):
    lines = [f"line {i}: the quick brown fox jumps over the lazy dog {i % 7}" for i in range(600)]
    path.write_text("\n".join(lines), encoding="utf-8")
    return str(path)


def epochs_done(root):
    """Epochs reported by the newest Trainer run directory."""
    reports = sorted(glob.glob(os.path.join(root, "Trainer", "model_run", "*", "epochs.json")),
                     key=os.path.getmtime)
    if not reports:
        return []
    try:
        with open(reports[-1], encoding="utf-8") as f:
            return [e["epoch"] for e in json.load(f)]
    except ValueError:  # being written
        return []


def test_kill_9_during_training_then_rerun_resumes_and_pushes_once(tmp_path, capsys):
    root, serving = str(tmp_path / "root"), str(tmp_path / "serving")
    cmd = [TEXTGEN, "run", "--data", corpus(tmp_path / "c.txt"), "--pipeline-root", root,
           "--serving-dir", serving, "--epochs", "6", "--steps-per-epoch", "40",
           "--eval-steps", "2", "--batch-size", "16", "--embedding-dim", "16",
           "--rnn-units", "64", "--cell", "gru", "--seq-length", "40",
           "--max-perplexity", "1000", "--sample-chars", "0", "--patience", "0",
           # Whatever preset `auto` picks here: without the weights' moving average the
           # epoch checkpoints hold the weights training resumes from, as compared below
           # (the average's own resume: tests/test_trainer.py).
           "--ema-momentum", "0"]
    killed = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    deadline = time.time() + 600
    while len(epochs_done(root)) < 2 and killed.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    assert killed.poll() is None, "the run ended before it could be killed"
    os.killpg(killed.pid, signal.SIGKILL)
    killed.wait()
    done_before_kill = max(epochs_done(root))

    store = metadata.open_store(root)
    trainer_states = [r["Trainer"].state for r in
                      (metadata.node_runs(store, c) for c in metadata.pipeline_runs(store))
                      if "Trainer" in r]
    assert "COMPLETE" not in trainer_states
    assert pusher.versions(serving) == []
    # What a resume starts from is the last epoch whose backup completed (the kill may fall
    # between an epoch's report and its backup), and its weights are that epoch's.
    killed_run = run_dirs(root)[-1]
    weights, saved_epoch = backup(root)
    assert saved_epoch in (done_before_kill - 1, done_before_kill)
    assert_same_weights(weights, checkpoint(killed_run, saved_epoch))

    # The re-run in this process (a new process all the same, to the killed one): what it
    # resumes from is on disk and in ML Metadata only.
    start = time.time()
    assert textgen_cli.main(cmd[1:]) == 0, capsys.readouterr().err[-3000:]
    rerun_dir = run_dirs(root)[-1]
    resumed = sorted(int(name[len("epoch-"):-len(".weights.h5")])
                     for name in os.listdir(os.path.join(rerun_dir, "checkpoints")))
    print(f"\nkilled after epoch {done_before_kill}; the re-run trained epochs {resumed} "
          f"in {time.time() - start:.0f} s")
    assert resumed == list(range(saved_epoch + 1, 7))
    assert len(pusher.versions(serving)) == 1
    assert not glob.glob(os.path.join(root, "Trainer", "backup", "*", "*"))
    # The export is the lowest-eval-loss epoch of the whole run, counted across the kill.
    with open(os.path.join(rerun_dir, "training.json"), encoding="utf-8") as f:
        training = json.load(f)
    assert [e["epoch"] for e in training["epochs"]] == list(range(1, 7))
    best = min(training["epochs"], key=lambda e: e["val_loss"])["epoch"]
    assert training["exported_epoch"] == best
    best_dir = killed_run if best <= saved_epoch else rerun_dir
    version = os.path.join(serving, str(pusher.versions(serving)[0]))
    assert_same_weights(exported_weights(root, version), checkpoint(best_dir, best))


def run_dirs(root):
    return sorted(glob.glob(os.path.join(root, "Trainer", "model_run", "*")),
                  key=lambda d: int(os.path.basename(d)))


def _tiny_model(root):
    """The test's network, for the vocabulary Transform built under `root`."""
    import tensorflow_transform as tft
    from models import features, model as char_model
    from models.settings import ModelSettings
    (graph,) = glob.glob(os.path.join(root, "Transform", "transform_graph", "*"))
    vocab = tft.TFTransformOutput(graph).vocabulary_by_name(features.VOCAB_NAME)
    return char_model.build_model(len(vocab) + features.NUM_RESERVED_IDS, ModelSettings(
        embedding_dim=16, rnn_units=64, rnn_layers=1, cell="gru", dropout=0.0))


def checkpoint(run_dir, epoch):
    m = _tiny_model(os.path.dirname(os.path.dirname(os.path.dirname(run_dir))))
    m.load_weights(os.path.join(run_dir, "checkpoints", f"epoch-{epoch:03d}.weights.h5"))
    return m.get_weights()


def backup(root):
    """BackupAndRestore's weights and the (1-based) epoch they are the end of."""
    import tensorflow as tf
    m = _tiny_model(root)
    (folder,) = glob.glob(os.path.join(root, "Trainer", "backup", "*", "last", "chief"))
    path = tf.train.latest_checkpoint(folder)
    tf.train.Checkpoint(model=m).read(path).expect_partial()
    saved = tf.train.load_checkpoint(path).get_tensor(
        "ckpt_saved_epoch/.ATTRIBUTES/VARIABLE_VALUE")
    return m.get_weights(), int(saved) + 1


def exported_weights(root, version_dir):
    import tensorflow as tf
    m = _tiny_model(root)
    tf.train.Checkpoint(model=m).read(
        os.path.join(version_dir, "variables", "variables")).expect_partial()
    return m.get_weights()


def assert_same_weights(a, b):
    assert len(a) == len(b) and all((x == y).all() for x, y in zip(a, b))


PUSH_AND_HANG = textwrap.dedent("""
    import os, sys, time
    sys.path.insert(0, sys.argv[3])
    from components import pusher
    def hang_instead_of_renaming(src, dst):
        print("copied", flush=True)  # the copy is complete, the rename not yet done
        time.sleep(600)
    pusher.os.rename = hang_instead_of_renaming
    pusher.push(sys.argv[1], sys.argv[2], {})
""")


def test_kill_9_during_push_leaves_no_version_and_the_next_push_cleans_up(tmp_path):
    model = tmp_path / "model"
    (model / "variables").mkdir(parents=True)
    (model / "saved_model.pb").write_bytes(b"graph" * 1000)
    (model / "variables" / "variables.index").write_bytes(b"index")
    serving = str(tmp_path / "serving")
    proc = subprocess.Popen([sys.executable, "-c", PUSH_AND_HANG, str(model), serving, REPO],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "copied"
    proc.kill()
    proc.wait()
    assert pusher.versions(serving) == []
    assert [n for n in os.listdir(serving) if n.startswith(pusher.TMP_PREFIX)]
    result = pusher.push(str(model), serving, {})
    assert result["pushed"] and pusher.versions(serving) == [result["version"]]
    assert not [n for n in os.listdir(serving) if n.startswith(pusher.TMP_PREFIX)]
