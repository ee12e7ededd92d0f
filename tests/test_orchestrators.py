"""Vertex AI / Kubeflow v2 compile and the Airflow DAG: built from the config, no cluster."""
import json
import os
import re

import pytest

from pipeline.configs import ConfigError
import textgen_cli

COMPONENTS = {"TextExampleGen", "StatisticsGen", "SchemaGen", "ExampleValidator", "Transform",
              "Trainer", "Evaluator", "InfraValidator", "Pusher"}

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
IMAGE = '[vertex]\nimage = "europe-docker.pkg.dev/p/r/textgen-pipeline:1"\n'


def _compile(tmp_path, capsys, extra_config="", flags=()):
    config = tmp_path / "vertex.toml"
    config.write_text(REMOTE_CONFIG + extra_config)
    output = tmp_path / "pipeline.json"
    code = textgen_cli.main(["compile", "--target", "vertex", "--config", str(config),
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
    assert classes["InfraValidator"] == "components.infra_validator.Executor"
    # The Trainer, and only it, asks for GPUs.
    trainer = containers["Trainer"]["resources"]
    assert trainer["accelerator"] == {"count": "2", "type": "NVIDIA_TESLA_T4"}
    assert trainer["cpuLimit"] == 4.0 and trainer["memoryLimit"] == 16.0
    assert not any("resources" in c for n, c in containers.items() if n != "Trainer")
    # Settings reach the components: the span range and the code wired by dotted path.
    # Vertex has no span resolver (see the tasks above): the ExampleGen reads both spans.
    text = json.dumps(definition)
    assert "span-{SPAN}/*.txt" in text and re.search(r'span_count\W+2', text)
    assert "models.trainer.run_fn" in text
    assert "Trainer" in out and "wrote" in out


def test_vertex_without_gpus_requests_none(tmp_path, capsys):
    definition, _ = _compile(tmp_path, capsys, IMAGE)
    trainer = _executors(definition)["Trainer_executor"]["container"]["resources"]
    assert "accelerator" not in trainer


@pytest.mark.parametrize("old, new, named", [
    # Object stores cannot rename a finished copy into place atomically.
    ("/gcs/my-bucket/serving", "gs://my-bucket/serving", "run.serving_dir"),
    # Remote data cannot be read here to derive the bound.
    ("max_perplexity = 30.0", "", "eval.max_perplexity"),
    # TFX's stock image cannot import our executors: the pipeline image must be named.
    (IMAGE, "", "vertex.image"),
])
def test_vertex_compile_refuses_what_it_cannot_run(tmp_path, capsys, old, new, named):
    config = tmp_path / "bad.toml"
    config.write_text((REMOTE_CONFIG + IMAGE).replace(old, new))
    assert textgen_cli.main(["compile", "--target", "vertex", "--config", str(config),
                             "--output", str(tmp_path / "p.json")]) == 2
    assert named in capsys.readouterr().err
    assert not (tmp_path / "p.json").exists()


@pytest.fixture
def airflow_home(tmp_path, monkeypatch):
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path / "airflow"))
    monkeypatch.setenv("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    return tmp_path


def _airflow_config(home, run="", rest=""):
    """A config file for the DAG under `home`: spans of text and roots, plus the given lines."""
    path = home / "airflow.toml"
    path.write_text(f"""[data]
path = "{home}/text/span-{{SPAN}}/*.txt"
[run]
pipeline_root = "{home}/root"
serving_dir = "{home}/serving"
{run}
{rest}""")
    return path


def test_airflow_dag_has_the_schedule_and_one_task_running_the_config(airflow_home):
    from pipeline.orchestrators import airflow_dag
    config = _airflow_config(airflow_home, run='schedule = "30 2 * * *"')
    dag = airflow_dag.build_dag(str(config))
    assert dag.dag_id == "textgen"
    assert dag.timetable.summary == "30 2 * * *"
    assert dag.max_active_runs == 1 and dag.catchup is False
    (task,) = dag.tasks
    assert task.task_id == airflow_dag.TASK_ID
    assert task.python_callable is airflow_dag.run_pipeline
    assert task.op_kwargs == {"config_file": str(config)}


def test_airflow_dag_needs_a_config_with_data(airflow_home, monkeypatch):
    from pipeline.orchestrators import airflow_dag
    monkeypatch.delenv(airflow_dag.CONFIG_ENV, raising=False)
    with pytest.raises(ConfigError, match=airflow_dag.CONFIG_ENV):
        airflow_dag.build_dag()
    config = airflow_home / "nodata.toml"
    config.write_text('[eval]\nmax_perplexity = 9.0\n')
    with pytest.raises(ConfigError, match="data.path"):
        airflow_dag.build_dag(str(config))
    config.write_text('[data]\npath = "/data/span-{SPAN}/*.txt"\n[train]\nepochs = 0\n')
    with pytest.raises(ConfigError, match="train.epochs"):
        airflow_dag.build_dag(str(config))


def test_deploy_dag_file_builds_from_the_environment(airflow_home, monkeypatch):
    config = airflow_home / "env.toml"
    config.write_text(f'[data]\npath = "{airflow_home}/span-{{SPAN}}/*.txt"\n'
                      f'[run]\npipeline_root = "{airflow_home}/root"\n')
    monkeypatch.setenv("TEXTGEN_CONFIG", str(config))
    import runpy
    dag_file = os.path.join(os.path.dirname(os.path.dirname(__file__)), "deploy", "airflow",
                            "textgen_dag.py")
    namespace = runpy.run_path(dag_file)
    assert namespace["DAG"].dag_id == "textgen"


# --- Content: what the orchestrators run is what the config says --------------------
# Every value differs from its default, so a setting dropped on the way shows.
SETTINGS = """
[model]
embedding_dim = 24
rnn_units = 48
cell = "gru"
dropout = 0.15
[train]
epochs = 7
batch_size = 16
learning_rate = 0.005
patience = 4
seed = 11
warm_start = false
"""
MAX_REGRESSION = 0.037  # the default is 0.01
VERTEX_SETTINGS = """
[vertex]
image = "europe-docker.pkg.dev/p/r/textgen:2"
trainer_cpu = 6.0
trainer_memory_gb = 20.0
trainer_gpus = 1
trainer_gpu_type = "NVIDIA_L4"
"""


def _expected():
    import tomllib
    from pipeline import configs
    settings = tomllib.loads(SETTINGS)
    defaults = configs.Config()
    for section in ("model", "train"):
        for key, value in settings[section].items():
            assert getattr(getattr(defaults, section), key) != value, f"{section}.{key}"
    assert defaults.eval.max_regression != MAX_REGRESSION
    return settings


def _check_trainer_and_evaluator(custom_config, eval_config, settings, max_perplexity,
                                 serving_dir):
    for section in ("model", "train"):
        for key, value in settings[section].items():
            assert custom_config[section][key] == value, f"{section}.{key}"
    assert custom_config["serving_dir"] == serving_dir and custom_config["mode"] == "stream"
    (metric,) = eval_config["metrics_specs"][0]["metrics"]
    assert metric["class_name"] == "Perplexity" and metric["module"] == "models.metrics"
    threshold = metric["threshold"]
    assert threshold["value_threshold"]["upper_bound"] == max_perplexity
    assert threshold["change_threshold"]["relative"] == MAX_REGRESSION
    assert threshold["change_threshold"]["direction"] == "LOWER_IS_BETTER"
    assert eval_config["model_specs"] == [{"signature_name": "score",
                                           "model_type": "tf_generic"}]


def test_vertex_definition_carries_the_configs_settings(tmp_path, capsys):
    settings = _expected()
    # REMOTE_CONFIG ends in its [eval] section.
    definition, _ = _compile(tmp_path, capsys,
                             f"max_regression = {MAX_REGRESSION}\n" + SETTINGS + VERTEX_SETTINGS)
    tasks = definition["pipelineSpec"]["root"]["dag"]["tasks"]

    def parameter(task, name):
        return json.loads(tasks[task]["inputs"]["parameters"][name]["runtimeValue"]
                          ["constantValue"]["stringValue"])
    _check_trainer_and_evaluator(parameter("Trainer", "custom_config"),
                                 parameter("Evaluator", "eval_config"), settings, 30.0,
                                 "/gcs/my-bucket/serving")
    containers = {name.removesuffix("_executor"): e["container"]
                  for name, e in _executors(definition).items() if "container" in e}
    # vertex.image from the config file (the --image flag is checked above).
    assert {c["image"] for c in containers.values()} == {"europe-docker.pkg.dev/p/r/textgen:2"}
    assert containers["Trainer"]["resources"] == {
        "cpuLimit": 6.0, "memoryLimit": 20.0,
        "accelerator": {"type": "NVIDIA_L4", "count": "1"}}


def test_the_airflow_task_runs_the_configs_settings_as_textgen_run_does(airflow_home,
                                                                         monkeypatch):
    """The task hands the local run (the code behind `textgen run`) the file's settings over
    the preset `auto` chose on the worker; a run holding the root's lock skips the task."""
    from airflow.exceptions import AirflowSkipException

    from pipeline import configs
    from pipeline.lock import LockBusy
    from pipeline.orchestrators import airflow_dag, local
    settings = _expected()
    config = _airflow_config(airflow_home, rest=SETTINGS)
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "0")  # the task sets it for its own process
    handed = []

    def fake_run(config, preset, verbose=False):
        handed.append((config, preset))
        raise LockBusy("pipeline root in use by another textgen run")
    monkeypatch.setattr(local, "run", fake_run)
    with pytest.raises(AirflowSkipException, match="in use by another textgen run"):
        airflow_dag.run_pipeline(str(config))
    [(run_config, preset)] = handed
    assert preset == configs.choose_preset()
    for section in ("model", "train"):
        for key, value in settings[section].items():
            assert getattr(getattr(run_config, section), key) == value, f"{section}.{key}"
    assert run_config.run.pipeline_root == str(airflow_home / "root")
