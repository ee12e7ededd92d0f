"""The runners, side by side: local.py (`textgen run`, TFX's LocalDagRunner), airflow_dag.py
(an Airflow DAG) and vertex.py (a Vertex AI / Kubeflow Pipelines v2 definition)."""
