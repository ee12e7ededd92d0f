"""Scheduled retraining over spans, through the CLI as cron would run it.

One module-scoped sequence (each run costs a minute or two here):
  1. span 1: trained from scratch, blessed, pushed as version A;
  2. span 2 with a deliberately bad model (one step from scratch): compared with A on
     span 2's eval split, regresses, not blessed, nothing pushed;
  3. span 2 with normal training: warm-started from A, compared with A, pushed as B;
  4. the same again, no new data: nothing trained, nothing new pushed;
and `textgen runs` tells the story from ML Metadata; then
  5. span 3 with --span-count 2: spans 2 and 3 are read, and recorded.
"""
import json
import logging
import os
import sys

import pytest
from absl import logging as absl_logging

from components import names, pusher
from pipeline import cli, runs as runs_lib
from test_pipeline_e2e import TINY, make_corpus, run_cli

BOUND = ["--max-perplexity", "200"]
# One step of a freshly initialised model: close to guessing uniformly.
BAD = ["--no-warm-start", "--epochs", "1", "--steps-per-epoch", "1"]


@pytest.fixture(scope="module")
def sched(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("spans")
    data, root, serving = tmp / "data", str(tmp / "root"), str(tmp / "serving")
    config = tmp / "daily.toml"
    config.write_text(f'[data]\npath = "{data}/span-{{SPAN}}/*.txt"\n'
                      f'[run]\npipeline_root = "{root}"\nserving_dir = "{serving}"\n')
    results = []

    def add_span(span, seed):
        os.makedirs(data / f"span-{span}")
        make_corpus(data / f"span-{span}" / "part.txt", seed=seed)

    def run(extra, capsys):
        results.append(run_cli(["run", "--config", str(config)] + TINY + BOUND + extra,
                               root, serving, capsys))
        return results[-1]

    return {"add_span": add_span, "run": run, "root": root, "serving": serving,
            "config": str(config), "results": results}


def test_span_1_is_blessed_and_pushed_as_version_a(sched, capsys):
    sched["add_span"](1, seed=1)
    r = sched["run"]([], capsys)
    s = r["summary"]
    assert r["code"] == 0, r["out"]
    assert s["spans"] == "1" and "span: 1" in r["out"]
    assert s["blessed"] and s["pushed"] and len(r["versions"]) == 1
    assert not s["warm_start"]["warm_start"]
    assert "fresh start: no blessed model" in r["out"]
    assert s["baseline_eval"] is None and "baseline: none" in r["out"]


def test_span_2_with_a_bad_model_is_not_blessed_and_pushes_nothing(sched, capsys):
    version_a = sched["results"][0]["versions"][0]
    sched["add_span"](2, seed=2)
    r = sched["run"](BAD, capsys)
    s = r["summary"]
    assert r["code"] == 0, r["out"]  # ran, did not bless: not a failure
    assert s["spans"] == "2"
    assert s["components"]["Trainer"]["state"] == "COMPLETE"
    assert not s["blessed"] and not s["pushed"]
    assert r["versions"] == [version_a]
    # Compared with A on the new span's eval split, and lost.
    assert s["baseline_version"] == str(version_a)
    assert s["eval"]["perplexity"] > s["baseline_eval"]["perplexity"] * 1.01
    assert any("regressed" in reason for reason in s["not_blessed_because"])
    assert "blessed: NO" in r["out"] and f"version {version_a}" in r["out"]
    assert "warm start is off" in r["out"]


def test_span_2_trained_normally_is_compared_with_a_and_pushed_as_b(sched, capsys):
    version_a = sched["results"][0]["versions"][0]
    r = sched["run"]([], capsys)
    s = r["summary"]
    assert r["code"] == 0, r["out"]
    assert s["spans"] == "2" and s["blessed"] and s["pushed"]
    assert s["baseline_version"] == str(version_a)
    assert s["eval"]["perplexity"] <= s["baseline_eval"]["perplexity"] * 1.01
    assert s["warm_start"]["warm_start"] and s["warm_start"]["version"] == version_a
    assert f"warm start from version {version_a}" in r["out"]
    version_b = int(s["pushed_version"])
    assert r["versions"] == [version_a, version_b] and version_b > version_a
    with open(os.path.join(sched["serving"], str(version_b), pusher.PUSH_RECORD)) as f:
        assert json.load(f)["model_uri"] == s["model_uri"]


def test_no_new_data_trains_nothing_and_pushes_nothing(sched, capsys):
    before = sched["results"][-1]["versions"]
    r = sched["run"]([], capsys)
    s = r["summary"]
    assert r["code"] == 0, r["out"]
    for node in ("TextExampleGen", "Transform", "Trainer"):
        assert s["components"][node]["state"] == "CACHED", node
    assert not s["pushed"] and r["versions"] == before
    assert "Trainer cached" in r["out"]


def test_textgen_runs_lists_the_story_from_ml_metadata(sched, capsys):
    version_a, version_b = sched["results"][-1]["versions"]
    rows = runs_lib.list_runs(sched["root"])
    assert [(r["span"], r["trainer"], r["blessed"], r["pushed_version"], r["baseline_version"])
            for r in rows] == [
        ("1", "trained", True, str(version_a), None),
        ("2", "trained", False, None, str(version_a)),
        ("2", "trained", True, str(version_b), str(version_a)),
        ("2", "cached", True, None, str(version_b)),
    ]
    assert rows[-1]["already_served_as"] == str(version_b)
    assert all(r["state"] == "ok" and r["perplexity"] > 1 for r in rows)
    assert rows[1]["perplexity"] > rows[1]["baseline_perplexity"]
    # As inside Airflow: a root handler on stdout and absl at INFO. ML Metadata's INFO line
    # ("MetadataStore with DB connection initialized") must still stay off the table.
    stdout_handler = logging.StreamHandler(sys.stdout)
    logging.getLogger().addHandler(stdout_handler)
    verbosity = absl_logging.get_verbosity()
    absl_logging.set_verbosity(absl_logging.INFO)
    try:
        assert cli.main(["runs", "--config", sched["config"]]) == 0
        table = capsys.readouterr().out.splitlines()
        assert cli.main(["runs", "--config", sched["config"], "-v"]) == 0
        verbose = capsys.readouterr().out
    finally:
        logging.getLogger().removeHandler(stdout_handler)
        absl_logging.set_verbosity(verbosity)
    assert table[0].split()[:3] == ["started", "span", "trainer"] and len(table) == 6, table
    assert "MetadataStore" in verbose
    assert cli.main(["runs", "--pipeline-root", sched["root"], "--json", "--last", "1"]) == 0
    assert [r["span"] for r in json.loads(capsys.readouterr().out)] == ["2"]



def test_span_3_with_span_count_2_reads_spans_2_and_3(sched, capsys):
    sched["add_span"](3, seed=3)
    r = sched["run"](["--span-count", "2"], capsys)
    s = r["summary"]
    assert r["code"] == 0, r["out"]
    assert s["spans"] == "2-3" and "span: 2-3" in r["out"]
    assert s["components"][names.EXAMPLE_GEN]["state"] == "COMPLETE"
    assert runs_lib.list_runs(sched["root"])[-1]["span"] == "2-3"
