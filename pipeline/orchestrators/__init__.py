"""Ways to run the pipeline other than `textgen run`: Airflow, Vertex AI / Kubeflow v2."""
