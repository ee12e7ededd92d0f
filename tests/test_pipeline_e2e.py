"""The whole pipeline through LocalDagRunner on a small corpus with a tiny model.

One module-scoped sequence of runs (each costs a minute or two here):
  1. first run: every component executes, the model is blessed and pushed;
  2. same inputs again: Transform and Trainer come from the cache, nothing new is pushed;
  3. an impossible perplexity bound: not blessed, nothing pushed.
"""
import json
import os
import random

import pytest

from components import pusher
from pipeline import cli, metadata, pipeline as pipeline_lib, summary as summary_lib
from conftest import call_signatures_in_fresh_process

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


def run_cli(argv, root, serving, capsys):
    """`textgen` in-process: exit code, printed summary, its JSON form, served versions."""
    code = cli.main(argv)
    out = capsys.readouterr().out
    with open(os.path.join(root, summary_lib.SUMMARY_FILE), encoding="utf-8") as f:
        summary = json.load(f)
    return {"code": code, "out": out, "summary": summary, "versions": pusher.versions(serving)}


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

    return {"run": run, "root": root, "serving": serving, "results": results}


def states(summary):
    return {node: c["state"] for node, c in summary["components"].items()}


def test_first_run_executes_everything_blesses_and_pushes(runs, capsys):
    r = runs["run"](["--max-perplexity", "200"], capsys)
    assert r["code"] == 0, r["out"]
    assert set(states(r["summary"]).values()) == {"COMPLETE"}
    assert set(states(r["summary"])) == {
        "TextExampleGen", "StatisticsGen", "SchemaGen", "ExampleValidator", "Transform",
        "Trainer", "latest_blessed_model_resolver", "Evaluator", "Pusher"}
    s = r["summary"]
    assert s["blessed"] and s["pushed"] and len(r["versions"]) == 1
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


def test_unchanged_rerun_is_cached_and_pushes_nothing(runs, capsys):
    before = pusher.versions(runs["serving"])
    r = runs["run"](["--max-perplexity", "200"], capsys)
    assert r["code"] == 0, r["out"]
    st = states(r["summary"])
    for node in ("TextExampleGen", "StatisticsGen", "SchemaGen", "Transform", "Trainer"):
        assert st[node] == "CACHED", (node, st)
    assert r["versions"] == before
    assert not r["summary"]["pushed"]
    assert "nothing new" in r["out"]


def test_impossible_bound_is_not_blessed_and_pushes_nothing(runs, capsys):
    before = pusher.versions(runs["serving"])
    r = runs["run"](["--max-perplexity", "1.0001"], capsys)
    assert r["code"] == 0, r["out"]
    s = r["summary"]
    assert not s["blessed"] and not s["pushed"]
    assert r["versions"] == before
    assert "blessed: NO" in r["out"] and "perplexity" in " ".join(s["not_blessed_because"])
