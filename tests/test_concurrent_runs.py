"""`textgen run` processes as cron would start them: overlapping runs on one pipeline
root, and a run (in lines mode) on Beam's DirectRunner in multi-processing mode."""
import json
import os
import subprocess
import sys
import time

from components import pusher
from pipeline import runs as runs_lib
from pipeline.lock import LOCK_NAME, holder_of
from test_pipeline_e2e import TINY, check_reported_perplexity, make_corpus

TEXTGEN = os.path.join(os.path.dirname(sys.executable), "textgen")
MULTI = ["--beam-arg=--direct_running_mode=multi_processing",
         "--beam-arg=--direct_num_workers=2"]


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


def test_overlapping_runs_one_runs_one_refuses_one_waits(tmp_path):
    """The first runs; one started meanwhile with --lock-timeout 0 refuses at once
    (exit 75); one with a timeout waits, then runs from the cache and pushes nothing new.
    Afterwards ML Metadata and the serving directory are whole."""
    root, serving, base = _base(tmp_path)
    logs = {name: open(tmp_path / f"{name}.log", "w+") for name in ("first", "waiter")}
    first = subprocess.Popen(base, stdout=logs["first"], stderr=subprocess.STDOUT, text=True)
    waiter = None
    try:
        _wait_for_lock_holder(os.path.join(root, LOCK_NAME), first)
        refused = subprocess.run(base + ["--lock-timeout", "0"], capture_output=True,
                                 text=True, timeout=300)
        assert refused.returncode == 75, refused.stderr
        assert "in use by another textgen run" in refused.stderr
        assert f"pid {first.pid} " in refused.stderr
        waiter = subprocess.Popen(base + ["--lock-timeout", "1800"], stdout=logs["waiter"],
                                  stderr=subprocess.STDOUT, text=True)
        assert first.wait(timeout=1800) == 0, _read(logs["first"])
        assert waiter.wait(timeout=1800) == 0, _read(logs["waiter"])
    finally:
        for proc in (first, waiter):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
    first_out, waiter_out = _read(logs["first"]), _read(logs["waiter"])
    assert "blessed: yes" in first_out and "pushed: version" in first_out
    assert "Trainer cached" in waiter_out and "nothing new" in waiter_out
    # Whole: one version, no half-copied leftovers, two complete runs in ML Metadata.
    assert len(pusher.versions(serving)) == 1
    assert sorted(os.listdir(serving)) == [str(v) for v in pusher.versions(serving)]
    rows = runs_lib.list_runs(root)
    assert [(r["state"], r["trainer"]) for r in rows] == [("ok", "trained"), ("ok", "cached")]
    assert rows[0]["pushed_version"] == str(pusher.versions(serving)[0])


def test_the_pipeline_in_lines_mode_on_the_multi_processing_direct_runner(tmp_path):
    """Every Beam stage in worker processes (each imports TensorFlow: ~8 min here), one
    record per line; the Evaluator's number, computed in the workers, is recomputed here."""
    root, serving, base = _base(tmp_path)
    result = subprocess.run(base + MULTI + ["--mode", "lines", "--verbose"],
                            capture_output=True, text=True, timeout=3600)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-5000:]
    assert "blessed: yes" in out and len(pusher.versions(serving)) == 1
    with open(os.path.join(root, "last_run_summary.json"), encoding="utf-8") as f:
        summary = json.load(f)
    check_reported_perplexity(summary, str(tmp_path / "corpus.txt"), "lines",
                              summary["pushed_path"])
    # Logged by Beam's SDK worker processes, not by this one.
    assert out.count("Pipeline_options: {'direct_num_workers': 2, "
                     "'direct_running_mode': 'multi_processing'") >= 2
    assert out.count("apache_beam.runners.worker.sdk_worker:Control channel established") >= 2
