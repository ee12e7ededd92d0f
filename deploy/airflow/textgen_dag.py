"""Airflow DAG file for textgen: copy it into Airflow's dags folder.

The Airflow workers need the textgen package installed (the pipeline image, or
deploy/install.sh) and TEXTGEN_CONFIG pointing at the config file; see docs/scheduling.md.
Importing it loads no TFX and no TensorFlow: the task does, when it runs.
"""
from pipeline.orchestrators.airflow_dag import build_dag

# Airflow finds DAGs among a module's globals.
DAG = build_dag()
