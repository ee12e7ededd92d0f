"""The whole pipeline through LocalDagRunner on a small corpus with a tiny model.

One module-scoped sequence of runs on one pipeline root (each costs up to a minute or two):
  1. first run: every component executes, the model is blessed and pushed; its reported
     perplexity is recomputed here from the pushed model and the raw text;
  2. a bound 0.1% above that perplexity: blessed (Transform and Trainer cached, nothing new
     pushed); 3. a bound 0.1% below it: refused;
  4. one line of models/ changed (in a copy of the code): the Trainer trains again;
     5. the same changed code again: cached;
  6-8. a worse candidate against the blessed baseline, max_regression just below and just
     above its measured regression: refused, then blessed;
  9. the first model again with a latency bound no model meets: blessed, not pushed;
  10. a candidate whose warm-up request fails: it never loads in the serving process, so
     it is not pushed.
"""
import json
import math
import os
import random
import shutil
import subprocess
import sys

import pytest

from components import pusher
from pipeline import metadata, pipeline as pipeline_lib, summary as summary_lib
import textgen_cli
from conftest import REPO, call_signatures_in_fresh_process

WORDS = ("to be or not that is the question whether tis nobler in mind suffer slings and "
         "arrows of outrageous fortune take arms against a sea troubles").split()


def make_corpus(path, chars=24_000, seed=0):
    rng = random.Random(seed)
    lines = []
    while sum(len(line) + 1 for line in lines) < chars:
        speaker = rng.choice(["HAMLET", "OPHELIA", "POLONIUS"])
        lines.append(f"{speaker}:\n" + " ".join(rng.choice(WORDS) for _ in range(12)) + ".\n")
    path.write_text("\n".join(lines), encoding="utf-8")
    return str(path)


TINY = ["--epochs", "2", "--steps-per-epoch", "15", "--eval-steps", "5", "--batch-size", "16",
        "--embedding-dim", "16", "--rnn-units", "32", "--cell", "gru", "--learning-rate", "0.01",
        "--seq-length", "40", "--sample-chars", "60"]


SEQ_LENGTH = int(TINY[TINY.index("--seq-length") + 1])
EVAL_FRACTION = 0.1  # the default
# The relative margin around a measured perplexity at which the gate must flip.
EPSILON = 1e-3


def run_cli(argv, root, serving, capsys, code_dir=None):
    """`textgen` in-process, or in a subprocess importing the code in code_dir: exit code,
    printed summary, its JSON form, served versions."""
    if code_dir is None:
        code = textgen_cli.main(argv)
        out = capsys.readouterr().out
    else:
        result = subprocess.run(
            [sys.executable, "-c", "import sys; from textgen_cli import main; "
             "sys.exit(main(sys.argv[1:]))", *argv], cwd=code_dir, capture_output=True,
            text=True, timeout=1800, env={**os.environ, "PYTHONPATH": code_dir})
        code, out = result.returncode, result.stdout + result.stderr[-3000:]
    with open(os.path.join(root, summary_lib.SUMMARY_FILE), encoding="utf-8") as f:
        summary = json.load(f)
    return {"code": code, "out": out, "summary": summary, "versions": pusher.versions(serving)}


def eval_records(corpus_path, mode, seq_length=SEQ_LENGTH, eval_fraction=EVAL_FRACTION):
    """The eval split cut from the raw file as the README says, written out again here
    (not with components/): the last eval_fraction of the characters; stream mode, windows
    of seq_length+1 (a tail of >= 2 kept); lines mode, from the line boundary before the
    cut, one record per non-empty line plus its "\n"."""
    with open(corpus_path, encoding="utf-8") as f:
        text = f.read()
    cut = int(round(len(text) * (1 - eval_fraction)))
    if mode == "stream":
        tail = text[cut:]
        size = seq_length + 1
        return [w for w in (tail[i:i + size] for i in range(0, len(tail), size)) if len(w) >= 2]
    tail = text[text.rfind("\n", 0, cut) + 1:]
    return [line + "\n" for line in tail.split("\n") if line.strip()]


def score_records(model_dir, records):
    """(exp(Σ NLL / Σ chars), Σ chars) from the SavedModel's `score` signature, in float64."""
    import numpy as np
    import tensorflow as tf
    examples = [tf.train.Example(features=tf.train.Features(feature={
        "text": tf.train.Feature(bytes_list=tf.train.BytesList(value=[r.encode()]))}))
        .SerializeToString() for r in records]
    out = tf.saved_model.load(model_dir).signatures["score"](examples=tf.constant(examples))
    nll = out["nll"].numpy().astype(np.float64).sum()
    chars = out["num_chars"].numpy().astype(np.float64).sum()
    return math.exp(nll / chars), chars


def check_reported_perplexity(summary, corpus_path, mode, model_dir):
    """The Evaluator's perplexity equals one computed here from the model and the raw text."""
    records = eval_records(corpus_path, mode)
    perplexity, chars = score_records(model_dir, records)
    split = summary["splits"]["eval"]
    assert (split["records"], split["chars"]) == (len(records), sum(map(len, records)))
    assert chars == split["chars"] - split["records"]
    assert summary["eval"]["perplexity"] == pytest.approx(perplexity, rel=1e-5)
    return perplexity


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("e2e")
    corpus = make_corpus(tmp / "corpus.txt")
    root, serving = str(tmp / "root"), str(tmp / "serving")
    base = ["run", "--data", corpus, "--pipeline-root", root, "--serving-dir", serving] + TINY
    results = []

    def run(extra, capsys):
        results.append(run_cli(base + extra, root, serving, capsys))
        return results[-1]

    return {"run": run, "root": root, "serving": serving, "results": results, "base": base,
            "corpus": corpus, "tmp": tmp}


def states(summary):
    return {node: c["state"] for node, c in summary["components"].items()}


def test_first_run_executes_everything_blesses_and_pushes(runs, capsys):
    r = runs["run"](["--max-perplexity", "200"], capsys)
    assert r["code"] == 0, r["out"]
    assert set(states(r["summary"]).values()) == {"COMPLETE"}
    assert set(states(r["summary"])) == {
        "TextExampleGen", "span_range_resolver", "StatisticsGen", "SchemaGen",
        "ExampleValidator", "Transform", "Trainer", "latest_blessed_model_resolver",
        "Evaluator", "InfraValidator", "Pusher"}
    s = r["summary"]
    assert s["blessed"] and s["pushed"] and len(r["versions"]) == 1
    # Served in a process of its own before the push: loaded, answered, timed.
    assert s["infra_blessed"] and s["generate_latency_ms"] > 0
    assert "infra validation (served in a process of its own): passed" in r["out"]
    assert s["splits"]["train"]["records"] > 0 and s["splits"]["eval"]["records"] > 0
    assert s["vocab_size"] == len(set(open(os.path.join(
        os.path.dirname(runs["root"]), "corpus.txt"), encoding="utf-8").read()))
    assert 1.0 < s["eval"]["perplexity"] < 200
    training = s["training"]
    assert len(training["epochs"]) == 2 and all("val_loss" in e for e in training["epochs"])
    assert training["exported_epoch"] == 1 + min(
        range(2), key=lambda i: training["epochs"][i]["val_loss"])
    assert training["precision"] in ("float32", "mixed_bfloat16")
    # The summary printed the numbers and a sample from the pushed model.
    assert "perplexity" in r["out"] and "blessed: yes" in r["out"]
    assert "sample from" in r["out"] and "ROMEO:" in r["out"]


def test_the_reported_perplexity_is_recomputed_from_the_pushed_model(runs):
    first = runs["results"][0]["summary"]
    check_reported_perplexity(first, runs["corpus"], "stream", first["pushed_path"])


def test_pushed_layout_and_signatures_in_a_fresh_process(runs):
    serving = runs["serving"]
    version = pusher.versions(serving)[0]
    version_dir = os.path.join(serving, str(version))
    assert {"saved_model.pb", "variables", "assets.extra"} <= set(os.listdir(version_dir))
    assert not [n for n in os.listdir(serving) if not n.isdigit()]
    out = call_signatures_in_fresh_process(version_dir, state_size=32)
    assert len(out["5"]["text"]) == 5


def test_the_code_fingerprint_reaches_the_cache_keys(runs):
    store = metadata.open_store(runs["root"])
    run = metadata.node_runs(store, metadata.pipeline_runs(store)[0])
    fingerprint = pipeline_lib.code_fingerprint()
    for node in ("TextExampleGen", "Transform", "Trainer"):
        props = run[node].execution.custom_properties
        assert fingerprint in props["custom_config"].string_value, node


def test_a_bound_just_above_the_measured_perplexity_blesses_from_the_cache(runs, capsys):
    measured = runs["results"][0]["summary"]["eval"]["perplexity"]
    before = pusher.versions(runs["serving"])
    r = runs["run"](["--max-perplexity", repr(measured * (1 + EPSILON))], capsys)
    assert r["code"] == 0, r["out"]
    st = states(r["summary"])
    for node in ("TextExampleGen", "StatisticsGen", "SchemaGen", "Transform", "Trainer"):
        assert st[node] == "CACHED", (node, st)
    assert r["summary"]["eval"]["perplexity"] == measured
    assert r["summary"]["blessed"], r["summary"]["not_blessed_because"]
    assert r["versions"] == before and not r["summary"]["pushed"]
    assert "nothing new" in r["out"]


def test_a_bound_just_below_the_measured_perplexity_refuses(runs, capsys):
    measured = runs["results"][0]["summary"]["eval"]["perplexity"]
    before = pusher.versions(runs["serving"])
    r = runs["run"](["--max-perplexity", repr(measured * (1 - EPSILON))], capsys)
    assert r["code"] == 0, r["out"]
    s = r["summary"]
    assert s["eval"]["perplexity"] == measured
    assert not s["blessed"] and not s["pushed"]
    assert r["versions"] == before
    assert "blessed: NO" in r["out"] and "perplexity" in " ".join(s["not_blessed_because"])


def copy_of_the_code(destination):
    for package in ("components", "models", "pipeline", "serving"):
        shutil.copytree(os.path.join(REPO, package), os.path.join(destination, package),
                        ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(os.path.join(REPO, "textgen_cli.py"), destination)  # the command line
    return str(destination)


def test_a_copy_with_one_line_of_models_changed_has_another_fingerprint(tmp_path):
    code = copy_of_the_code(tmp_path / "code")
    assert pipeline_lib.code_fingerprint(code) == pipeline_lib.code_fingerprint()
    path = os.path.join(code, "models", "sampling.py")
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines(keepends=True)
    lines[-1] = lines[-1].rstrip("\n") + "  # changed\n"
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(lines)
    assert pipeline_lib.code_fingerprint(code) != pipeline_lib.code_fingerprint()


def test_a_code_change_trains_again_and_the_run_after_it_is_cached(runs, capsys):
    code = copy_of_the_code(runs["tmp"] / "changed_code")
    with open(os.path.join(code, "models", "model.py"), "a", encoding="utf-8") as f:
        f.write("# one changed line\n")
    fingerprint = pipeline_lib.code_fingerprint(code)
    argv = runs["base"] + ["--max-perplexity", "200"]
    changed = run_cli(argv, runs["root"], runs["serving"], capsys, code_dir=code)
    assert changed["code"] == 0, changed["out"]
    for node in ("TextExampleGen", "Transform", "Trainer"):
        assert states(changed["summary"])[node] == "COMPLETE", (node, changed["summary"])
    store = metadata.open_store(runs["root"])
    trainer = metadata.node_runs(store, metadata.pipeline_runs(store)[-1])["Trainer"]
    assert fingerprint in trainer.execution.custom_properties["custom_config"].string_value
    again = run_cli(argv, runs["root"], runs["serving"], capsys, code_dir=code)
    assert again["code"] == 0, again["out"]
    for node in ("TextExampleGen", "Transform", "Trainer"):
        assert states(again["summary"])[node] == "CACHED", (node, again["summary"])
    runs["results"].extend([changed, again])


def test_max_regression_blesses_just_above_the_measured_regression_not_below(runs, capsys):
    # A worse candidate: one epoch from scratch, against the blessed two-epoch models.
    worse = ["--max-perplexity", "200", "--epochs", "1", "--no-warm-start"]
    first = runs["run"](worse, capsys)
    assert first["code"] == 0, first["out"]
    assert states(first["summary"])["Trainer"] == "COMPLETE"
    candidate = first["summary"]["eval"]["perplexity"]
    baseline = first["summary"]["baseline_eval"]["perplexity"]
    assert candidate > baseline, "the candidate meant to be worse is not"
    regression = candidate / baseline - 1
    before = pusher.versions(runs["serving"])
    below = runs["run"](worse + ["--max-regression", repr(regression - EPSILON)], capsys)
    assert below["code"] == 0, below["out"]
    assert (below["summary"]["eval"]["perplexity"], below["summary"]["baseline_eval"][
        "perplexity"]) == (candidate, baseline)
    assert not below["summary"]["blessed"] and below["versions"] == before
    assert "regressed" in " ".join(below["summary"]["not_blessed_because"])
    above = runs["run"](worse + ["--max-regression", repr(regression + EPSILON)], capsys)
    assert above["code"] == 0, above["out"]
    assert above["summary"]["blessed"] and above["summary"]["pushed"], above["out"]
    assert above["versions"] == before + [int(above["summary"]["pushed_version"])]


def runs_table(root, capsys):
    assert textgen_cli.main(["runs", "--pipeline-root", root]) == 0
    return capsys.readouterr().out


def test_a_candidate_slower_than_the_latency_bound_is_blessed_but_not_pushed(runs, capsys):
    before = pusher.versions(runs["serving"])
    # The first run's model (Trainer cached); only the InfraValidator runs anew.
    r = runs["run"](["--max-perplexity", "200", "--max-latency-ms", "0.001"], capsys)
    assert r["code"] == 0, r["out"]
    s = r["summary"]
    assert states(s)["Trainer"] == "CACHED" and states(s)["InfraValidator"] == "COMPLETE"
    assert s["blessed"] and not s["infra_blessed"] and not s["pushed"]
    assert s["generate_latency_ms"] > 0.001
    assert "above the bound of 0.001 ms" in s["not_pushed_because"]
    assert r["versions"] == before
    assert "infra validation (served in a process of its own): FAILED" in r["out"]
    assert "pushed: nothing (infra validation failed: generate of" in r["out"]
    table = runs_table(runs["root"], capsys)
    assert "not pushed: infra validation failed: generate of" in table


def test_a_candidate_that_fails_to_load_when_served_is_not_pushed(runs, capsys, monkeypatch):
    from models import features, warmup
    exported = warmup.inputs_by_signature

    def with_a_failing_request(*args):
        inputs = exported(*args)
        inputs[features.GENERATE_SIGNATURE]["top_p"] *= 0  # top_p must be in (0, 1]
        return inputs

    monkeypatch.setattr(warmup, "inputs_by_signature", with_a_failing_request)
    before = pusher.versions(runs["serving"])
    # Another seed: a new candidate, exported with the failing request in its warm-up file.
    r = runs["run"](["--max-perplexity", "200", "--max-regression", "10", "--seed", "3"],
                    capsys)
    assert r["code"] == 0, r["out"]
    s = r["summary"]
    assert states(s)["Trainer"] == "COMPLETE"
    assert s["blessed"] and not s["infra_blessed"] and not s["pushed"]
    assert s["generate_latency_ms"] is None  # it never got that far
    reason = s["not_pushed_because"]
    assert "did not load" in reason and "warm-up request" in reason and "top_p" in reason
    assert r["versions"] == before
    assert "not pushed: infra validation failed: the candidate did not load" in runs_table(
        runs["root"], capsys)
