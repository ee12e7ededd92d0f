"""Vertex AI / Kubeflow v2 compile and the Airflow DAG: built from the config, no cluster."""
import json
import os

import pytest

from pipeline import cli
from pipeline.configs import ConfigError

COMPONENTS = {"TextExampleGen", "StatisticsGen", "SchemaGen", "ExampleValidator", "Transform",
              "Trainer", "Evaluator", "Pusher"}

REMOTE_CONFIG = """
[data]
path = "gs://my-bucket/text/span-{SPAN}/*.txt"
span_count = 2
[run]
pipeline_root = "gs://my-bucket/tfx_root"
serving_dir = "/gcs/my-bucket/serving"
schedule = "0 3 * * *"
[eval]
max_perplexity = 30.0
"""


def _compile(tmp_path, capsys, extra_config="", flags=()):
    config = tmp_path / "vertex.toml"
    config.write_text(REMOTE_CONFIG + extra_config)
    output = tmp_path / "pipeline.json"
    code = cli.main(["compile", "--target", "vertex", "--config", str(config),
                     "--output", str(output), *flags])
    out = capsys.readouterr()
    assert code == 0, out.err
    with open(output, encoding="utf-8") as f:
        return json.load(f), out.out


def _executors(definition):
    return definition["pipelineSpec"]["deploymentSpec"]["executors"]


def test_vertex_definition_names_every_component(tmp_path, capsys):
    definition, out = _compile(tmp_path, capsys, "[vertex]\ntrainer_gpus = 2\n",
                               ["--image", "europe-docker.pkg.dev/p/r/textgen:1"])
    tasks = set(definition["pipelineSpec"]["root"]["dag"]["tasks"])
    assert COMPONENTS <= tasks
    # The blessed-model resolver compiles to Vertex's two resolver steps.
    assert {t for t in tasks - COMPONENTS} == {
        "latest_blessed_model_resolver-model-blessing-resolver",
        "latest_blessed_model_resolver-model-resolver"}
    assert definition["pipelineSpec"]["pipelineInfo"]["name"] == "textgen"
    assert definition["runtimeConfig"]["gcsOutputDirectory"] == "gs://my-bucket/tfx_root"
    containers = {name.removesuffix("_executor"): e["container"]
                  for name, e in _executors(definition).items() if "container" in e}
    assert set(containers) == COMPONENTS
    assert {c["image"] for c in containers.values()} == {"europe-docker.pkg.dev/p/r/textgen:1"}
    # Our own executors are named by dotted path, for the image to import.
    classes = {n: c["args"][c["args"].index("--executor_class_path") + 1]
               for n, c in containers.items()}
    assert classes["TextExampleGen"] == "components.text_example_gen.TextExampleGenExecutor"
    assert classes["Evaluator"] == "components.evaluator.Executor"
    assert classes["Pusher"] == "components.pusher.Executor"
    # The Trainer, and only it, asks for GPUs.
    trainer = containers["Trainer"]["resources"]
    assert trainer["accelerator"] == {"count": "2", "type": "NVIDIA_TESLA_T4"}
    assert trainer["cpuLimit"] == 4.0 and trainer["memoryLimit"] == 16.0
    assert not any("resources" in c for n, c in containers.items() if n != "Trainer")
    # Settings reach the components: the span range and the code wired by dotted path.
    text = json.dumps(definition)
    assert "span-{SPAN}/*.txt" in text and "span_count" in text
    assert "models.trainer.run_fn" in text
    assert "Trainer" in out and "wrote" in out


def test_vertex_without_gpus_requests_none(tmp_path, capsys):
    definition, _ = _compile(tmp_path, capsys)
    trainer = _executors(definition)["Trainer_executor"]["container"]["resources"]
    assert "accelerator" not in trainer


@pytest.mark.parametrize("old, new, named", [
    # Object stores cannot rename a finished copy into place atomically.
    ("/gcs/my-bucket/serving", "gs://my-bucket/serving", "run.serving_dir"),
    # Remote data cannot be read here to derive the bound.
    ("max_perplexity = 30.0", "", "eval.max_perplexity"),
])
def test_vertex_compile_refuses_what_it_cannot_run(tmp_path, capsys, old, new, named):
    config = tmp_path / "bad.toml"
    config.write_text(REMOTE_CONFIG.replace(old, new))
    assert cli.main(["compile", "--target", "vertex", "--config", str(config),
                     "--output", str(tmp_path / "p.json")]) == 2
    assert named in capsys.readouterr().err
    assert not (tmp_path / "p.json").exists()


@pytest.fixture
def airflow_home(tmp_path, monkeypatch):
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path / "airflow"))
    monkeypatch.setenv("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    return tmp_path


def test_airflow_dag_has_the_schedule_and_every_component(airflow_home):
    from pipeline.orchestrators import airflow_dag
    config = airflow_home / "daily.toml"
    config.write_text(f"""
[data]
path = "{airflow_home}/text/span-{{SPAN}}/*.txt"
[run]
pipeline_root = "{airflow_home}/root"
serving_dir = "{airflow_home}/serving"
schedule = "30 2 * * *"
[eval]
max_perplexity = 40.0
""")
    dag = airflow_dag.build_dag(str(config))
    assert dag.dag_id == "textgen"
    assert dag.timetable.summary == "30 2 * * *"
    assert dag.max_active_runs == 1 and dag.catchup is False
    assert COMPONENTS | {"latest_blessed_model_resolver"} == set(dag.task_ids)
    assert {"Transform", "SchemaGen"} <= dag.get_task("Trainer").upstream_task_ids
    assert {"Trainer", "latest_blessed_model_resolver"} <= \
        dag.get_task("Evaluator").upstream_task_ids
    assert dag.get_task("Pusher").upstream_task_ids == {"Trainer", "Evaluator"}


def test_airflow_dag_needs_a_config_and_a_bound(airflow_home, monkeypatch):
    from pipeline.orchestrators import airflow_dag
    monkeypatch.delenv(airflow_dag.CONFIG_ENV, raising=False)
    with pytest.raises(ConfigError, match=airflow_dag.CONFIG_ENV):
        airflow_dag.build_dag()
    config = airflow_home / "nobound.toml"
    config.write_text('[data]\npath = "/data/span-{SPAN}/*.txt"\n')
    with pytest.raises(ConfigError, match="eval.max_perplexity"):
        airflow_dag.build_dag(str(config))


def test_deploy_dag_file_builds_from_the_environment(airflow_home, monkeypatch):
    config = airflow_home / "env.toml"
    config.write_text(f'[data]\npath = "{airflow_home}/span-{{SPAN}}/*.txt"\n'
                      f'[run]\npipeline_root = "{airflow_home}/root"\n'
                      '[eval]\nmax_perplexity = 9.0\n')
    monkeypatch.setenv("TEXTGEN_CONFIG", str(config))
    import runpy
    dag_file = os.path.join(os.path.dirname(os.path.dirname(__file__)), "deploy", "airflow",
                            "textgen_dag.py")
    namespace = runpy.run_path(dag_file)
    assert namespace["DAG"].dag_id == "textgen"
