"""Airflow: the pipeline as a DAG on the config's schedule (TFX's AirflowDagRunner).

Airflow imports DAG files every few seconds, so building the DAG must not read the
corpus: the perplexity bound has to be in the config (eval.max_perplexity). Each
component becomes one Airflow task; ML Metadata is the config's [metadata] (a shared
MySQL database suits a scheduler with several workers). max_active_runs=1 is this
orchestrator's form of the pipeline-root lock that `textgen run` takes.

Use: put deploy/airflow/textgen_dag.py in Airflow's dags folder and point
TEXTGEN_CONFIG at the config file (docs/scheduling.md).
"""
import datetime
import os
from typing import Optional

from tfx.orchestration.airflow.airflow_dag_runner import AirflowDagRunner, AirflowPipelineConfig

from pipeline import configs, corpus as corpus_lib, pipeline as pipeline_lib

CONFIG_ENV = "TEXTGEN_CONFIG"
# The first schedulable day; catchup is off, so Airflow never backfills from it.
START_DATE = datetime.datetime(2024, 1, 1)


def build_dag(config_path: Optional[str] = None,
              start_date: datetime.datetime = START_DATE):
    """The airflow.models.DAG for the config at config_path (default: $TEXTGEN_CONFIG)."""
    config_path = config_path or os.environ.get(CONFIG_ENV)
    if not config_path:
        raise configs.ConfigError(f"set {CONFIG_ENV} to the textgen config file (TOML/YAML) "
                                  "that the Airflow DAG runs")
    # `--preset auto`, as `textgen run` does: the DAG runs on the machine that trains.
    config = configs.load(config_path, preset=configs.choose_preset()[0])
    if not config.data.path:
        raise configs.ConfigError(f"{config_path}: set data.path, e.g. "
                                  "'/data/text/span-{SPAN}/*.txt'")
    if config.eval.max_perplexity is None:
        raise configs.ConfigError(f"{config_path}: set eval.max_perplexity: a scheduled DAG "
                                  "needs a fixed bound (deriving it would read the corpus at "
                                  "every DAG parse)")
    input_base, pattern = corpus_lib.locate(config.data.path)
    tfx_pipeline = pipeline_lib.create_pipeline(config, input_base, pattern,
                                                config.eval.max_perplexity)
    return AirflowDagRunner(AirflowPipelineConfig(airflow_dag_config={
        "schedule": config.run.schedule,
        "start_date": start_date,
        "catchup": False,
        "max_active_runs": 1,
        "tags": ["textgen", "tfx"],
    })).run(tfx_pipeline)
