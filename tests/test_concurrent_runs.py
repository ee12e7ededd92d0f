"""`textgen run` processes as cron would start them: overlapping runs on one pipeline
root (the first of them also shows what a run prints on the terminal). The run on Beam's
multi-processing DirectRunner is the installed package's (tests/test_packaging.py)."""
import os
import subprocess
import sys
import time

import pytest

from components import pusher
from pipeline import configs
from pipeline import runs as runs_lib
from pipeline.lock import LOCK_NAME, holder_of
from test_pipeline_e2e import TINY, make_corpus

TEXTGEN = os.path.join(os.path.dirname(sys.executable), "textgen")


def _wait_for_lock_holder(lock_file, proc, limit=600):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if os.path.exists(lock_file) and holder_of(lock_file).startswith(f"pid {proc.pid} "):
            return
        assert proc.poll() is None, "the first run ended before taking the lock"
        time.sleep(0.2)
    raise AssertionError(f"no lock taken by pid {proc.pid} within {limit} s")


def _read(log):
    log.flush()
    log.seek(0)
    return log.read()


def _base(tmp_path):
    corpus = make_corpus(tmp_path / "corpus.txt")
    root, serving = str(tmp_path / "root"), str(tmp_path / "serving")
    return root, serving, [TEXTGEN, "run", "--data", corpus, "--pipeline-root", root,
                           "--serving-dir", serving, "--max-perplexity", "200"] + TINY


@pytest.fixture(scope="module")
def overlapping(tmp_path_factory):
    """The first run; one started meanwhile with --lock-timeout 0 (it should refuse at
    once); one with a timeout (it should wait, then run from the cache). Each run is a
    `textgen run` process as cron starts it: its terminal output is kept whole."""
    tmp_path = tmp_path_factory.mktemp("overlapping")
    root, serving, base = _base(tmp_path)
    logs = {name: open(tmp_path / f"{name}.log", "w+") for name in ("first", "waiter")}
    first = subprocess.Popen(base, stdout=logs["first"], stderr=subprocess.STDOUT, text=True)
    waiter = None
    try:
        _wait_for_lock_holder(os.path.join(root, LOCK_NAME), first)
        refused = subprocess.run(base + ["--lock-timeout", "0"], capture_output=True,
                                 text=True, timeout=300)
        waiter = subprocess.Popen(base + ["--lock-timeout", "1800"], stdout=logs["waiter"],
                                  stderr=subprocess.STDOUT, text=True)
        assert first.wait(timeout=1800) == 0, _read(logs["first"])
        assert waiter.wait(timeout=1800) == 0, _read(logs["waiter"])
    finally:
        for proc in (first, waiter):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
    return {"root": root, "serving": serving, "first_pid": first.pid, "refused": refused,
            "first": _read(logs["first"]), "waiter": _read(logs["waiter"])}


def test_overlapping_runs_one_runs_one_refuses_one_waits(overlapping):
    """The one started with --lock-timeout 0 refused at once (exit 75); the one with a
    timeout waited, then ran from the cache and pushed nothing new. Afterwards ML Metadata
    and the serving directory are whole."""
    refused, serving = overlapping["refused"], overlapping["serving"]
    assert refused.returncode == 75, refused.stderr
    assert "in use by another textgen run" in refused.stderr
    assert f"pid {overlapping['first_pid']} " in refused.stderr
    first_out, waiter_out = overlapping["first"], overlapping["waiter"]
    assert "blessed: yes" in first_out and "pushed: version" in first_out
    assert "Trainer cached" in waiter_out and "nothing new" in waiter_out
    # Whole: one version, no half-copied leftovers, two complete runs in ML Metadata.
    assert len(pusher.versions(serving)) == 1
    assert sorted(os.listdir(serving)) == [str(v) for v in pusher.versions(serving)]
    rows = runs_lib.list_runs(overlapping["root"])
    assert [(r["state"], r["trainer"]) for r in rows] == [("ok", "trained"), ("ok", "cached")]
    assert rows[0]["pushed_version"] == str(pusher.versions(serving)[0])


# What TensorFlow, TFX, Beam and the interpreter print on a good run (issue 17).
NOISE = ["Unable to register", "cuFFT", "cuDNN", "cuBLAS", "property_predicate",
         "Instructions for updating", "is deprecated", "crcmod", "Exception ignored",
         "Traceback", "WARNING", "FutureWarning"]


def test_a_successful_run_prints_progress_and_no_framework_noise(overlapping):
    """The first run's terminal (stdout and stderr as one) holds the run's progress and
    summary only; what the stack prints goes to the log file the summary names."""
    out = overlapping["first"]
    for noise in NOISE:
        assert noise not in out, f"{noise!r} on the terminal:\n{out}"
    # The progress lines: the recipe (`--preset auto` chose for this machine, the flags'
    # network under it), stages, epochs with their losses.
    preset, why = configs.choose_preset()
    for line in (f"recipe: preset {preset} ({why}): GRU 1×32", "TextExampleGen started",
                 "Trainer finished", "Pusher finished", "epoch 2: train loss"):
        assert line in out, f"{line!r} missing:\n{out}"
    assert "blessed: yes" in out
    # Keras' own epoch lines ("Epoch 1/2", "3/3 - 1s - loss: ...") would repeat ours.
    assert "Epoch 1/" not in out and " - loss: " not in out, out
    log = os.path.join(overlapping["root"], "textgen.log")
    assert f"log (TFX, Beam and TensorFlow output): {log}" in out
    # Routed, not lost: TFX's and TensorFlow's own lines are in the file.
    with open(log, encoding="utf-8") as f:
        text = f.read()
    assert "Component Trainer is running." in text and "Unable to register" in text
