"""deploy/: the TF Serving configs parse, and the compose file and serve.sh agree with each
other, with the configs and with what `textgen serve` does. (Running the containers needs
Docker and, for the GPU variant, an NVIDIA GPU: see deploy/README.md.)"""
import importlib.metadata
import os
import re
import shlex
import subprocess

import yaml
from google.protobuf import text_format

from serving.metrics import METRICS_PATH

DEPLOY = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "deploy")
CONFIG = os.path.join(DEPLOY, "config")


def read(*parts):
    with open(os.path.join(DEPLOY, *parts), encoding="utf-8") as f:
        return f.read()


def compose_services():
    return yaml.safe_load(read("docker-compose.yml"))["services"]


def test_model_config_parses_and_serves_the_latest_textgen_version():
    from tensorflow_serving.config import model_server_config_pb2
    config = text_format.Parse(read("config", "models.config"),
                               model_server_config_pb2.ModelServerConfig())
    [model] = config.model_config_list.config
    assert (model.name, model.base_path, model.model_platform) == \
        ("textgen", "/models/textgen", "tensorflow")
    assert model.model_version_policy.latest.num_versions == 1


def test_images_match_the_serving_api_version_and_the_gpu_variant_reserves_gpus():
    api_version = importlib.metadata.version("tensorflow-serving-api")
    services = compose_services()
    assert services["textgen-gpu"]["image"] == f"tensorflow/serving:{api_version}-gpu"
    assert services["textgen-cpu"]["image"] == f"tensorflow/serving:{api_version}"
    [device] = services["textgen-gpu"]["deploy"]["resources"]["reservations"]["devices"]
    assert device == {"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}
    assert "deploy" not in services["textgen-cpu"]
    assert f'image="tensorflow/serving:{api_version}-gpu"; gpu_flags=(--gpus all)' in \
        read("serve.sh")


def test_the_model_directory_is_mounted_read_only_where_the_config_points():
    for service in compose_services().values():
        [models] = [v for v in service["volumes"] if v["target"] == "/models/textgen"]
        assert models["read_only"] is True
    assert "target=/models/textgen,readonly" in read("serve.sh")


def server_flags(flags):
    return {flag.split("=", 1)[0]: flag.split("=", 1)[1] for flag in flags}


def test_compose_and_serve_sh_pass_the_same_flags_and_the_files_exist():
    compose = {name: server_flags(service["command"])
               for name, service in compose_services().items()}
    assert compose["textgen-gpu"] == compose["textgen-cpu"]
    flags = compose["textgen-gpu"]
    script = " ".join(read("serve.sh").split("\\\n"))
    run_line = script[script.index("exec docker run"):]
    words = shlex.split(run_line.replace('${gpu_flags[@]+"${gpu_flags[@]}"}', ""),
                        posix=True)
    image_index = words.index("$image")
    script_flags = server_flags(w for w in words[image_index + 1:] if w.startswith("--"))
    assert script_flags == flags

    assert flags["--port"] == "8500" and flags["--rest_api_port"] == "8501"
    assert flags["--enable_batching"] == "${TEXTGEN_ENABLE_BATCHING:-true}"
    # A request waits in its batch on a request thread: fewer threads than a full batch
    # would cap every batch.
    from serving import settings
    parameters, _ = settings.read_batching_parameters(os.path.join(CONFIG, "batching.config"))
    for flag in ("--grpc_max_threads", "--rest_api_num_threads"):
        assert int(flags[flag]) >= 2 * parameters.max_batch_size, flag
    for flag in ("--model_config_file", "--monitoring_config_file", "--batching_parameters_file"):
        assert flags[flag].startswith("/config/")
        assert os.path.isfile(os.path.join(CONFIG, flags[flag][len("/config/"):])), flag


def test_metrics_are_where_textgen_serve_puts_them():
    config = read("config", "monitoring.config")
    assert re.search(r"enable:\s*true", config)
    assert re.search(r'path:\s*"([^"]+)"', config).group(1) == METRICS_PATH


def test_batching_config_satisfies_tf_serving_and_textgen_serve_reads_it():
    from serving import settings
    parameters, tf_serving_only = settings.read_batching_parameters(
        os.path.join(CONFIG, "batching.config"))
    assert parameters.batch_timeout_micros > 0 and parameters.num_batch_threads > 0
    # TF Serving refuses allowed sizes that do not rise to exactly max_batch_size.
    sizes = [int(line.split(":")[1]) for line in read("config", "batching.config").splitlines()
             if line.startswith("allowed_batch_sizes:")]
    assert not sizes or (sizes == sorted(set(sizes)) and sizes[-1] == parameters.max_batch_size)
    assert set(tf_serving_only) <= {"allowed_batch_sizes"}


def test_serve_sh_is_valid_bash_and_refuses_a_directory_without_versions(tmp_path):
    script = os.path.join(DEPLOY, "serve.sh")
    assert subprocess.run(["bash", "-n", script]).returncode == 0
    result = subprocess.run([script, "cpu", str(tmp_path)], capture_output=True, text=True)
    assert result.returncode == 2 and "no <version>/saved_model.pb" in result.stderr
