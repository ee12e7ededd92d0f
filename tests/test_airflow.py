"""Scheduled retraining over spans, as a platform team deploys it: the shipped DAG
(deploy/airflow/textgen_dag.py) run by Airflow 2.10 itself, `airflow db migrate` and
`airflow dags test` in a throwaway AIRFLOW_HOME with its own SQLite database, the textgen
package installed from its wheel (tests/conftest.py's `installed`), a fresh pipeline root
and serving directory, as docs/scheduling.md tells a user to do. One module-scoped
sequence of DAG runs (ticks), the config file changed between them as an operator would:

  1. span 1 arrives: trained from scratch, blessed, pushed as version A;
  2. span 2 arrives, with a deliberately bad model (one step from scratch): compared with
     A on span 2's eval split, regresses, not blessed, nothing pushed; the DAG run succeeds;
  3. span 2, trained normally: warm-started from A, compared with A, pushed as B;
  4. no new data: nothing trained, nothing new pushed;
  5. span 3 with data.span_count = 2: spans 2 and 3 are read, and recorded;
and `textgen runs` tells the story from the ML Metadata the DAG wrote.
"""
import json
import logging
import os
import shutil
import subprocess
import sys

import pytest
from absl import logging as absl_logging

from components import names, pusher
import textgen_cli
from conftest import REPO
from test_pipeline_e2e import make_corpus

DAG_FILE = os.path.join(REPO, "deploy", "airflow", "textgen_dag.py")
CONFIG = """[data]
path = "{tmp}/text/span-{{SPAN}}/*.txt"
seq_length = 40
{data}
[model]
embedding_dim = 16
rnn_units = 32
cell = "gru"
[train]
{train}
eval_steps = 5
batch_size = 16
learning_rate = 0.01
[eval]
max_perplexity = 200.0
[run]
pipeline_root = "{tmp}/root"
serving_dir = "{tmp}/serving"
sample_chars = 0
"""
TRAIN = "epochs = 2\nsteps_per_epoch = 15"
# One step of a freshly initialised model: close to guessing uniformly.
BAD = "warm_start = false\nepochs = 1\nsteps_per_epoch = 1"
# (logical date, the span that arrives before the run, [data] and [train] lines)
TICKS = [("2026-01-01", 1, "", TRAIN), ("2026-01-02", 2, "", BAD),
         ("2026-01-03", None, "", TRAIN), ("2026-01-04", None, "", TRAIN),
         ("2026-01-05", 3, "span_count = 2", TRAIN)]


class Airflow:
    """Airflow's own command line in the installed environment, on its own AIRFLOW_HOME."""

    def __init__(self, installed, tmp):
        self.installed, self.cwd = installed, str(tmp)
        home = tmp / "airflow"
        (home / "dags").mkdir(parents=True)
        shutil.copy(DAG_FILE, home / "dags")
        self.env = {k: v for k, v in os.environ.items()
                    if k != "PYTHONPATH" and not k.startswith("AIRFLOW")}
        self.env.update(AIRFLOW_HOME=str(home), AIRFLOW__CORE__LOAD_EXAMPLES="False",
                        TEXTGEN_CONFIG=str(tmp / "daily.toml"))

    def __call__(self, *args, timeout=1800):
        return subprocess.run([self.installed.bin("airflow"), *args], capture_output=True,
                              text=True, cwd=self.cwd, env=self.env, timeout=timeout)

    def python(self, code):
        return subprocess.run([self.installed.bin("python"), "-c", code], capture_output=True,
                              text=True, cwd=self.cwd, env=self.env, timeout=300)


@pytest.fixture(scope="module")
def airflow(installed, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("airflow")
    (tmp / "daily.toml").write_text(CONFIG.format(tmp=tmp, data="", train=TRAIN))
    airflow = Airflow(installed, tmp)
    # Airflow's database, and the DAG in it as the scheduler's DAG processor would put it.
    for command in (("db", "migrate"), ("dags", "reserialize")):
        done = airflow(*command, timeout=600)
        assert done.returncode == 0, done.stdout + done.stderr
    airflow.tmp = tmp
    return airflow


def test_the_dag_file_imports_without_tfx_or_tensorflow(airflow):
    """Airflow gives a DAG file 30 s; TFX alone takes 30-45 s to import: the DAG file must
    leave it to the task."""
    loaded = airflow.python(
        "import json, sys\n"
        "from airflow.models.dagbag import DagBag\n"
        "bag = DagBag(include_examples=False)\n"
        "print(json.dumps({'errors': bag.import_errors, 'dags': bag.dag_ids,\n"
        "                  'tasks': bag.dags['textgen'].task_ids,\n"
        "                  'heavy': sorted({m.split('.')[0] for m in sys.modules} &\n"
        "                                  {'tensorflow', 'tfx', 'apache_beam'})}))")
    assert loaded.returncode == 0, loaded.stderr
    found = json.loads(loaded.stdout.strip().splitlines()[-1])
    assert found == {"errors": {}, "dags": ["textgen"], "tasks": ["textgen_run"], "heavy": []}


@pytest.fixture(scope="module")
def ticks(airflow):
    """The DAG runs (TICKS), one after another, each as `airflow dags test` runs it; after
    each: its output, the served versions and the run summary the task wrote; then each
    DAG run's state in Airflow's database."""
    tmp, seen = airflow.tmp, []
    for date, span, data, train in TICKS:
        if span is not None:
            (tmp / "text" / f"span-{span}").mkdir(parents=True)
            make_corpus(tmp / "text" / f"span-{span}" / "part-0.txt", seed=span)
        (tmp / "daily.toml").write_text(CONFIG.format(tmp=tmp, data=data, train=train))
        result = airflow("dags", "test", "textgen", date)
        summary_file = tmp / "root" / "last_run_summary.json"
        seen.append({"result": result, "out": result.stdout + result.stderr, "date": date,
                     "serving": str(tmp / "serving"),
                     "versions": [str(v) for v in pusher.versions(str(tmp / "serving"))]
                     if (tmp / "serving").exists() else [],
                     "summary": json.loads(summary_file.read_text())
                     if summary_file.exists() else None})
        assert result.returncode == 0, seen[-1]["out"][-5000:]
    listed = airflow("dags", "list-runs", "-d", "textgen", "-o", "json")
    assert listed.returncode == 0, listed.stderr
    states = {run["execution_date"][:10]: run["state"]
              for run in json.loads(listed.stdout.strip().splitlines()[-1])}
    for tick in seen:
        tick["state"] = states[tick["date"]]
    return seen


def test_span_1_is_blessed_and_pushed_as_version_a(ticks):
    first = ticks[0]
    assert first["state"] == "success"
    assert len(first["versions"]) == 1
    s, out = first["summary"], first["out"]
    assert s["spans"] == "1" and "span: 1" in out
    assert s["blessed"] and s["pushed"] and s["pushed_version"] == first["versions"][0]
    assert s["warm_start"] == {"warm_start": False,
                               "reason": "no blessed model in the serving directory yet"}
    assert "fresh start: no blessed model" in out
    assert s["baseline_eval"] is None and "baseline: none" in out
    # The task's log carries the run's progress and summary.
    assert "Trainer finished" in out and "blessed: yes" in out


def test_span_2_with_a_bad_model_is_not_blessed_pushes_nothing_and_the_run_succeeds(ticks):
    version_a = ticks[0]["versions"][0]
    second = ticks[1]
    assert second["state"] == "success"  # ran, did not bless: not a failure
    assert second["versions"] == [version_a]
    s, out = second["summary"], second["out"]
    assert s["spans"] == "2"
    assert s["components"]["Trainer"]["state"] == "COMPLETE"
    assert not s["blessed"] and not s["pushed"]
    # Compared with A on the new span's eval split, and lost.
    assert s["baseline_version"] == version_a
    assert s["eval"]["perplexity"] > s["baseline_eval"]["perplexity"] * 1.01
    assert any("regressed" in reason for reason in s["not_blessed_because"])
    assert "blessed: NO" in out and f"version {version_a}" in out
    assert "warm start is off" in out


def test_span_2_warm_starts_from_a_is_judged_against_a_and_pushed_as_b(ticks):
    version_a = ticks[0]["versions"][0]
    third = ticks[2]
    assert third["state"] == "success"
    s, out = third["summary"], third["out"]
    assert s["spans"] == "2" and s["blessed"] and s["pushed"]
    # The Evaluator's baseline: A, scored on span 2's eval split like the candidate.
    assert s["baseline_version"] == version_a
    assert s["eval"]["perplexity"] <= s["baseline_eval"]["perplexity"] * 1.01
    assert s["warm_start"]["warm_start"] is True and str(s["warm_start"]["version"]) == version_a
    assert f"warm start from version {version_a}" in out
    version_b = s["pushed_version"]
    assert third["versions"] == [version_a, version_b] and int(version_b) > int(version_a)
    with open(os.path.join(third["serving"], version_b, pusher.PUSH_RECORD)) as f:
        assert json.load(f)["model_uri"] == s["model_uri"]


def test_no_new_data_trains_nothing_and_pushes_nothing(ticks):
    fourth = ticks[3]
    assert fourth["state"] == "success"
    assert fourth["versions"] == ticks[2]["versions"]
    s = fourth["summary"]
    assert not s["pushed"] and s["pushed_version"] == ticks[2]["versions"][1]
    states = {node: c["state"] for node, c in s["components"].items()}
    for node in ("TextExampleGen", "StatisticsGen", "SchemaGen", "ExampleValidator",
                 "Transform", "Trainer"):
        assert states[node] == "CACHED", states
    # The baseline is now B itself (a new input), so the Evaluator runs again and blesses;
    # the Pusher finds that model served already.
    assert s["baseline_version"] == ticks[2]["versions"][1] and s["blessed"]
    assert (states["Evaluator"], states["Pusher"]) == ("COMPLETE", "COMPLETE")
    assert "Trainer cached" in fourth["out"]


def test_span_3_with_span_count_2_reads_spans_2_and_3(ticks):
    fifth = ticks[4]
    assert fifth["state"] == "success"
    s = fifth["summary"]
    assert s["spans"] == "2-3" and "span: 2-3" in fifth["out"]
    assert s["components"][names.EXAMPLE_GEN]["state"] == "COMPLETE"


def test_textgen_runs_lists_the_dags_runs(installed, airflow, ticks, capsys):
    version_a, version_b = ticks[2]["versions"]
    root = str(airflow.tmp / "root")
    listed = subprocess.run([installed.bin("textgen"), "runs", "--pipeline-root", root,
                             "--json"], capture_output=True, text=True, cwd=airflow.cwd,
                            env=airflow.env, timeout=300)
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert [(r["span"], r["trainer"], r["blessed"], r["pushed_version"],
             r["already_served_as"], r["baseline_version"], r["state"]) for r in rows[:4]] == [
        ("1", "trained", True, version_a, None, None, "ok"),
        ("2", "trained", False, None, None, version_a, "ok"),
        ("2", "trained", True, version_b, None, version_a, "ok"),
        ("2", "cached", True, None, version_b, version_b, "ok"),
    ]
    assert [(r["span"], r["trainer"], r["baseline_version"], r["state"]) for r in rows[4:]] == [
        ("2-3", "trained", version_b, "ok")]
    assert all(r["perplexity"] > 1 for r in rows)
    assert rows[1]["perplexity"] > rows[1]["baseline_perplexity"]
    # As inside Airflow: a root handler on stdout and absl at INFO. ML Metadata's INFO line
    # ("MetadataStore with DB connection initialized") must still stay off the table.
    stdout_handler = logging.StreamHandler(sys.stdout)
    logging.getLogger().addHandler(stdout_handler)
    verbosity = absl_logging.get_verbosity()
    absl_logging.set_verbosity(absl_logging.INFO)
    config = str(airflow.tmp / "daily.toml")
    try:
        assert textgen_cli.main(["runs", "--config", config]) == 0
        table = capsys.readouterr().out.splitlines()
        assert textgen_cli.main(["runs", "--config", config, "-v"]) == 0
        verbose = capsys.readouterr().out
    finally:
        logging.getLogger().removeHandler(stdout_handler)
        absl_logging.set_verbosity(verbosity)
    assert table[0].split()[:3] == ["started", "span", "trainer"] and len(table) == 7, table
    assert "MetadataStore" in verbose
    assert textgen_cli.main(["runs", "--pipeline-root", root, "--json", "--last", "1"]) == 0
    assert [r["span"] for r in json.loads(capsys.readouterr().out)] == ["2-3"]
