"""Airflow DAG file for textgen: copy or link into Airflow's dags folder.

The Airflow workers need this project installed (`pip install -e .` or the venv of
`make install`) and TEXTGEN_CONFIG pointing at the config file; see docs/scheduling.md.
"""
import models

models.train_with_onednn()  # Airflow's task processes train: before TensorFlow loads
from pipeline.orchestrators.airflow_dag import build_dag  # noqa: E402

# Airflow finds DAGs among a module's globals.
DAG = build_dag()
