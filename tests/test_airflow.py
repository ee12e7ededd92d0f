"""The shipped DAG (deploy/airflow/textgen_dag.py) run by Airflow 2.10 itself: `airflow db
migrate` and `airflow dags test` in a throwaway AIRFLOW_HOME with its own SQLite database,
the textgen package installed from its wheel (tests/conftest.py's `installed`), a fresh
pipeline root and serving directory, as docs/scheduling.md tells a user to do:

  span 1 → blessed, version 1 pushed;
  span 2 → warm start from version 1, judged against version 1 on span 2's eval split,
           version 2 pushed;
  no new span → cached, nothing pushed;
  span 3 under a bound no model meets → not blessed, nothing pushed, the DAG run succeeds;
and `textgen runs` lists the four runs from the ML Metadata the DAG wrote.
"""
import json
import os
import shutil
import subprocess

import pytest

from components import pusher
from conftest import REPO
from test_pipeline_e2e import make_corpus

DAG_FILE = os.path.join(REPO, "deploy", "airflow", "textgen_dag.py")
CONFIG = """[data]
path = "{tmp}/text/span-{{SPAN}}/*.txt"
seq_length = 40
[model]
embedding_dim = 16
rnn_units = 32
cell = "gru"
[train]
epochs = 2
steps_per_epoch = 15
eval_steps = 5
batch_size = 16
learning_rate = 0.01
[eval]
max_perplexity = {bound}
[run]
pipeline_root = "{tmp}/root"
serving_dir = "{tmp}/serving"
sample_chars = 0
"""
# (logical date, the span that arrives before the run, the bound the config sets)
TICKS = [("2026-01-01", 1, 200.0), ("2026-01-02", 2, 200.0), ("2026-01-03", None, 200.0),
         ("2026-01-04", 3, 1.0)]


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
    (tmp / "daily.toml").write_text(CONFIG.format(tmp=tmp, bound=TICKS[0][2]))
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
    """The four DAG runs, one after another, each as `airflow dags test` runs it; after
    each: its output, the served versions and the run summary the task wrote; then each
    DAG run's state in Airflow's database."""
    tmp, seen = airflow.tmp, []
    for date, span, bound in TICKS:
        if span is not None:
            (tmp / "text" / f"span-{span}").mkdir(parents=True)
            make_corpus(tmp / "text" / f"span-{span}" / "part-0.txt", seed=span)
        (tmp / "daily.toml").write_text(CONFIG.format(tmp=tmp, bound=bound))
        result = airflow("dags", "test", "textgen", date)
        summary_file = tmp / "root" / "last_run_summary.json"
        seen.append({"result": result, "out": result.stdout + result.stderr, "date": date,
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


def test_span_1_is_blessed_and_pushed_as_the_first_version(ticks):
    first = ticks[0]
    assert first["state"] == "success"
    assert len(first["versions"]) == 1
    s = first["summary"]
    assert s["spans"] == "1" and s["blessed"] and s["pushed"]
    assert s["pushed_version"] == first["versions"][0]
    assert s["warm_start"] == {"warm_start": False,
                               "reason": "no blessed model in the serving directory yet"}
    # The task's log carries the run's progress and summary.
    assert "Trainer finished" in first["out"] and "blessed: yes" in first["out"]


def test_span_2_warm_starts_from_version_1_is_judged_against_it_and_pushed(ticks):
    v1 = ticks[0]["versions"][0]
    second = ticks[1]
    assert second["state"] == "success"
    assert second["versions"][0] == v1 and len(second["versions"]) == 2
    s = second["summary"]
    assert s["spans"] == "2" and s["blessed"] and s["pushed"]
    assert s["pushed_version"] == second["versions"][1]
    assert s["warm_start"]["warm_start"] is True and str(s["warm_start"]["version"]) == v1
    # The Evaluator's baseline: version 1, scored on span 2's eval split like the candidate.
    assert s["baseline_version"] == v1
    assert s["baseline_eval"]["perplexity"] > 0
    assert s["splits"]["eval"]["records"] > 0


def test_no_new_span_runs_from_the_cache_and_pushes_nothing(ticks):
    third = ticks[2]
    assert third["state"] == "success"
    assert third["versions"] == ticks[1]["versions"]
    s = third["summary"]
    assert not s["pushed"] and s["pushed_version"] == ticks[1]["versions"][1]
    states = {node: c["state"] for node, c in s["components"].items()}
    for node in ("TextExampleGen", "StatisticsGen", "SchemaGen", "ExampleValidator",
                 "Transform", "Trainer"):
        assert states[node] == "CACHED", states
    # The baseline is now version 2 itself (a new input), so the Evaluator runs again and
    # blesses; the Pusher finds that model served already.
    assert s["baseline_version"] == ticks[1]["versions"][1] and s["blessed"]
    assert (states["Evaluator"], states["Pusher"]) == ("COMPLETE", "COMPLETE")


def test_a_span_that_misses_the_bound_is_not_pushed_and_the_run_succeeds(ticks):
    fourth = ticks[3]
    assert fourth["state"] == "success"
    assert fourth["versions"] == ticks[1]["versions"]
    s = fourth["summary"]
    assert s["spans"] == "3" and not s["blessed"] and not s["pushed"]
    assert s["components"]["Trainer"]["state"] == "COMPLETE"
    assert any("outside the bound" in reason for reason in s["not_blessed_because"]), s


def test_textgen_runs_lists_the_dags_runs(installed, airflow, ticks):
    versions = ticks[1]["versions"]
    listed = subprocess.run([installed.bin("textgen"), "runs", "--pipeline-root",
                             str(airflow.tmp / "root"), "--json"], capture_output=True,
                            text=True, cwd=airflow.cwd, env=airflow.env, timeout=300)
    assert listed.returncode == 0, listed.stderr
    rows = [(r["span"], r["trainer"], r["blessed"], r["pushed_version"],
             r["already_served_as"], r["baseline_version"], r["state"])
            for r in json.loads(listed.stdout)]
    assert rows == [
        ("1", "trained", True, versions[0], None, None, "ok"),
        ("2", "trained", True, versions[1], None, versions[0], "ok"),
        ("2", "cached", True, None, versions[1], versions[1], "ok"),
        ("3", "trained", False, None, None, versions[1], "ok"),
    ]
