"""textgen as it is deployed: the wheel built from this checkout, installed (not editable)
by deploy/install.sh into a fresh environment, run from a folder outside the source tree:
the command line, a pipeline run whose Beam stages run in worker processes of that
environment (the multi-processing DirectRunner), then `textgen serve` and `textgen
generate` against the model it pushed."""
import json
import os
import subprocess
import sys
import tarfile
import zipfile

import pytest

from components import pusher
from conftest import REPO
from test_pipeline_e2e import TINY, check_reported_perplexity, make_corpus
from test_reliability_load import ServeProcess

PACKAGES = ("components", "models", "pipeline", "serving")
MODULES = ("textgen_cli.py",)  # top-level modules beside the packages: the command line
MULTI_PROCESSING = os.path.join(REPO, "deploy", "beam", "direct-multiprocessing.toml")


def _tree_files():
    """What the package needs at run time: every module and preset under the packages,
    and the top-level modules."""
    found = set(MODULES)
    for package in PACKAGES:
        for folder, _, files in os.walk(os.path.join(REPO, package)):
            if "__pycache__" in folder:
                continue
            found |= {os.path.relpath(os.path.join(folder, f), REPO) for f in files
                      if f.endswith((".py", ".toml"))}
    return found


def test_wheel_and_sdist_hold_every_module_and_preset(installed):
    expected = _tree_files()
    assert "pipeline/presets/quality.toml" in expected
    assert "pipeline/orchestrators/airflow_dag.py" in expected and "textgen_cli.py" in expected
    with zipfile.ZipFile(installed.wheel) as wheel:
        assert expected <= set(wheel.namelist()), expected - set(wheel.namelist())
        [metadata] = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
        text = wheel.read(metadata).decode()
    assert "Requires-Python: <3.12,>=3.11" in text
    with tarfile.open(installed.sdist) as sdist:
        names = {n.split("/", 1)[1] for n in sdist.getnames() if "/" in n}
    assert expected <= names, expected - names


def test_setup_py_packages_what_beam_setup_file_ships(installed, tmp_path):
    # Beam's --setup_file runs `python setup.py sdist` beside the file and installs the
    # result on each worker: setup.py must hand everything over to pyproject.toml.
    with tarfile.open(installed.sdist) as sdist:
        sdist.extractall(tmp_path / "src", filter="data")
    [src] = (tmp_path / "src").iterdir()
    result = subprocess.run([sys.executable, "setup.py", "sdist", "--dist-dir",
                             str(tmp_path / "out")], capture_output=True, text=True, cwd=src,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    [shipped] = (tmp_path / "out").iterdir()
    assert shipped.name == "textgen-0.1.0.tar.gz"
    with tarfile.open(shipped) as sdist:
        names = {n.split("/", 1)[1] for n in sdist.getnames() if "/" in n}
    assert _tree_files() <= names, _tree_files() - names


def _textgen(installed, *args, cwd, timeout=300):
    # No PYTHONPATH and a folder outside the tree: only the installed package can answer.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([installed.bin("textgen"), *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=timeout)


def test_installed_command_runs_from_outside_the_tree(installed, tmp_path):
    result = _textgen(installed, "run", "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "--preset {default,fast,quality,quality_float32,tutorial,auto}" in \
        " ".join(result.stdout.split())
    where = subprocess.run(
        [installed.bin("python"), "-c",
         "import components, models, pipeline, serving; from pipeline import configs; "
         # A variant reads its base from the installed package too.
         "print(configs.load(preset='quality_float32').train.max_cpu_minutes); "
         "print(*[m.__file__ for m in (components, models, pipeline, serving)])"],
        capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert where.returncode == 0, where.stderr
    budget, files = where.stdout.splitlines()
    assert float(budget) > 0  # the quality presets' files were read from the installed package
    site_packages = os.path.join(installed.env, "lib")
    for path in files.split():
        assert path.startswith(site_packages) and not path.startswith(REPO), path


@pytest.fixture(scope="module")
def pushed(installed, tmp_path_factory):
    """A tiny `textgen run` in lines mode by the installed command, with the shipped
    multi-processing Beam configuration: every Beam stage runs in SDK worker processes of
    the installed environment (each imports TensorFlow: the slowest run of the suite)."""
    tmp = tmp_path_factory.mktemp("installed_run")
    corpus = make_corpus(tmp / "corpus.txt")
    root, serving = str(tmp / "root"), str(tmp / "serving")
    result = _textgen(installed, "run", "--config", MULTI_PROCESSING, "--data", corpus,
                      "--mode", "lines", "--pipeline-root", root, "--serving-dir", serving,
                      "--max-perplexity", "200", "--verbose", *TINY, cwd=tmp, timeout=3600)
    return {"result": result, "out": result.stdout + result.stderr, "root": root,
            "serving": serving, "corpus": corpus, "tmp": tmp}


def test_installed_run_blesses_and_pushes_from_beam_worker_processes(pushed):
    out = pushed["out"]
    assert pushed["result"].returncode == 0, out[-5000:]
    assert "blessed: yes" in out and len(pusher.versions(pushed["serving"])) == 1
    with open(os.path.join(pushed["root"], "last_run_summary.json"), encoding="utf-8") as f:
        summary = json.load(f)
    # The Evaluator's number, computed in the workers, recomputed here.
    check_reported_perplexity(summary, pushed["corpus"], "lines", summary["pushed_path"])
    # Logged by Beam's SDK worker processes, not by the run's own process.
    assert out.count("Pipeline_options: {'direct_num_workers': 2, "
                     "'direct_running_mode': 'multi_processing'") >= 2
    assert out.count("apache_beam.runners.worker.sdk_worker:Control channel established") >= 2


def test_installed_serve_and_generate_answer_from_the_pushed_model(installed, pushed):
    assert pushed["result"].returncode == 0, pushed["out"][-5000:]
    server = ServeProcess(pushed["serving"], textgen=installed.bin("textgen"),
                          cwd=pushed["tmp"])
    try:
        version = str(pusher.versions(pushed["serving"])[0])
        assert f"(version {version})" in server.log[-1]
        runs = [_textgen(installed, "generate", "--server", server.grpc_target, "--prompt",
                         "HAM", "--num-chars", "40", "--seed", "5", cwd=pushed["tmp"])
                for _ in range(2)]
    finally:
        assert server.stop() == 0, "".join(server.log)
    assert [r.returncode for r in runs] == [0, 0], runs[0].stderr
    # Seeded: the same text twice; lines mode stops a row at its line's end.
    assert runs[0].stdout == runs[1].stdout and runs[0].stdout.startswith("HAM")
    assert "\n" not in runs[0].stdout.rstrip("\n")
