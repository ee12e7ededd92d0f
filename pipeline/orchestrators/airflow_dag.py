"""Airflow: the pipeline as a DAG on the config's schedule, run by Airflow's workers.

Airflow imports DAG files every 30 s and gives each import 30 s: building the DAG reads
only the config and imports only Airflow and this project's settings (no TFX, no
TensorFlow, which take 30-45 s to import). The work is deferred to the task: the same
local run as `textgen run` (local.py: the corpus checks, the pipeline root's lock, TFX's
LocalDagRunner, ML Metadata, the summary) on the Airflow worker that runs it. So a fresh
pipeline root works, `textgen runs` lists Airflow's runs as it lists `textgen run`'s, a
retried task resumes from TFX's cache, and the perplexity bound can come from the corpus.

Why not TFX's AirflowDagRunner (an Airflow task per component): its operators are built
from TFX component objects, so the DAG file has to import TFX and times out; and it runs
components through TFX's legacy launcher, whose ML Metadata has no pipeline-run contexts
(`textgen runs` sees nothing) and which creates no folders. The components' progress is
in the task's log, one line each as they start and finish.

Use: copy deploy/airflow/textgen_dag.py into Airflow's dags folder and point
TEXTGEN_CONFIG at the config file (docs/scheduling.md).
"""
import datetime
import logging
import os
from typing import Any, Dict, Optional

from pipeline import configs

CONFIG_ENV = "TEXTGEN_CONFIG"
# The first schedulable day; catchup is off, so Airflow never backfills from it.
START_DATE = datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc)
TASK_ID = "textgen_run"

logger = logging.getLogger("textgen")


def config_path(path: Optional[str] = None) -> str:
    """The config file the DAG runs: `path`, else $TEXTGEN_CONFIG (absolute: the worker
    may start elsewhere)."""
    path = path or os.environ.get(CONFIG_ENV)
    if not path:
        raise configs.ConfigError(f"set {CONFIG_ENV} to the textgen config file (TOML/YAML) "
                                  "that the Airflow DAG runs")
    return os.path.abspath(path)


def load_config(path: str, preset: Optional[str] = None) -> configs.Config:
    config = configs.load(path, preset=preset)
    if not config.data.path:
        raise configs.ConfigError(f"{path}: set data.path, e.g. "
                                  "'/data/text/span-{SPAN}/*.txt'")
    return config


def run_pipeline(config_file: str) -> Dict[str, Any]:
    """The DAG's task: one run of the pipeline on this worker, as `textgen run --config
    config_file` runs it. Returns (as the task's XCom) what the run did.

    A run that completes ends the task successfully, blessed or not (the log says why);
    a component's failure fails it; another run holding the pipeline root (a `textgen
    run` from cron, a second DAG on the same root) skips it.
    """
    import models
    models.train_with_onednn()  # this process trains: before TensorFlow loads
    from airflow.exceptions import AirflowSkipException

    from pipeline import summary
    from pipeline.lock import LockBusy
    from pipeline.orchestrators import local
    # `--preset auto`, as `textgen run` does, chosen on the worker that trains.
    preset = configs.choose_preset()
    config = load_config(config_file, preset[0])
    try:
        result = local.run(config, preset)
    except LockBusy as err:
        raise AirflowSkipException(str(err)) from None
    for line in summary.format_summary(result.summary, result.corpus, result.bound,
                                       result.bound_reason, config.eval.max_regression,
                                       result.log_path).splitlines():
        logger.info("%s", line)
    s = result.summary
    return {"blessed": s["blessed"], "pushed": s["pushed"],
            "pushed_version": s["pushed_version"], "pushed_path": s["pushed_path"]}


def build_dag(path: Optional[str] = None, start_date: datetime.datetime = START_DATE):
    """The airflow.models.DAG for the config at `path` (default: $TEXTGEN_CONFIG)."""
    from airflow.models.dag import DAG
    from airflow.operators.python import PythonOperator

    path = config_path(path)
    config = load_config(path)  # a bad file fails the DAG's import, where Airflow shows it
    with DAG(dag_id=config.run.pipeline_name, schedule=config.run.schedule,
             start_date=start_date, catchup=False,
             # One run at a time: the pipeline root's lock would skip a second one anyway.
             max_active_runs=1, tags=["textgen", "tfx"],
             doc_md=f"textgen: raw text → TFX pipeline → pushed model, as configured in "
                    f"`{path}`; `textgen runs --config {path}` lists the runs.") as dag:
        PythonOperator(task_id=TASK_ID, python_callable=run_pipeline,
                       op_kwargs={"config_file": path})
    return dag
