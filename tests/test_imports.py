"""Imports flow one way: no cycle among the project's modules, and modules import alone.

The graph counts every import, also those inside functions (a deferred import hides a
cycle from Python, not from the reader).
"""
import ast
import os
import subprocess
import sys

import pytest

from conftest import REPO

PACKAGES = ("components", "models", "pipeline", "serving", "bench")
# `textgen`'s command line, above the packages: it dispatches to pipeline's and serving's.
TOP_LEVEL_MODULES = ("textgen_cli",)


def project_modules():
    modules = {name: os.path.join(REPO, name + ".py") for name in TOP_LEVEL_MODULES}
    for package in PACKAGES:
        for folder, _, files in os.walk(os.path.join(REPO, package)):
            for name in files:
                if name.endswith(".py"):
                    path = os.path.join(folder, name)
                    dotted = os.path.relpath(path, REPO)[:-3].replace(os.sep, ".")
                    modules[dotted.removesuffix(".__init__")] = path
    return modules


def import_graph(modules):
    """module → the project modules it imports (anywhere in its code)."""
    graph = {}
    for module, path in modules.items():
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), path)
        targets = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets.add(node.module)
                targets.update(f"{node.module}.{alias.name}" for alias in node.names)
        graph[module] = {t for t in targets if t in modules and t != module
                         and not module.startswith(t + ".")}  # a package's own __init__
    return graph


def cycles(graph):
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_a_deferred_import_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]


def test_no_import_cycle_among_the_project_modules():
    modules = project_modules()
    assert {"textgen_cli", "pipeline.cli", "serving.cli", "models.export"} <= set(modules)
    assert cycles(import_graph(modules)) == []


def _imports_between(graph, importer, imported):
    """(module, target) for every import from package `importer` into package `imported`."""
    return sorted((module, target) for module, targets in graph.items()
                  if module.split(".")[0] == importer
                  for target in targets if target.split(".")[0] == imported)


def test_pipeline_never_imports_serving_and_serving_takes_only_the_cli_errors():
    """`textgen` dispatches to both from textgen_cli.py: a pipeline run (and a Beam or
    Airflow worker) never loads the server, and serving takes from the pipeline only the
    command line's error type and exit codes."""
    graph = import_graph(project_modules())
    assert _imports_between(graph, "pipeline", "serving") == []
    assert {target for _, target in _imports_between(graph, "serving", "pipeline")} <= {
        "pipeline.errors"}
    assert graph["textgen_cli"] >= {"pipeline.cli", "serving.cli"}
    assert [module for module, targets in graph.items() if "textgen_cli" in targets] == []


def test_the_layering_check_sees_a_pipeline_module_importing_serving():
    graph = {"pipeline.cli": {"pipeline.configs"}, "pipeline.summary": {"serving.client"},
             "serving.cli": {"pipeline.errors"}}
    assert _imports_between(graph, "pipeline", "serving") == [
        ("pipeline.summary", "serving.client")]


# (module, must it stay free of TensorFlow?) `textgen --help`, `textgen runs`, the
# clients and the Airflow DAG file answer without loading it.
ALONE = [("models.export", False), ("models.trainer", False), ("textgen_cli", True),
         ("serving.cli", True), ("pipeline.cli", True),
         ("pipeline.runs", True), ("pipeline.records", True), ("components.names", True),
         ("pipeline.orchestrators.local", True), ("pipeline.summary", True),
         # Airflow imports the DAG file within 30 s: TFX and TensorFlow load in its task.
         ("pipeline.orchestrators.airflow_dag", True)]


@pytest.mark.parametrize("module, light", ALONE)
def test_a_module_imports_alone_in_a_fresh_interpreter(module, light):
    script = (f"import sys; import {module}; env = sys.modules['os'].environ; "
              "print('tensorflow' in sys.modules, env.get('TF_USE_LEGACY_KERAS'), "
              "env.get('TF_ENABLE_ONEDNN_OPTS', 'unset'))")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            cwd=REPO, env=_without("TF_USE_LEGACY_KERAS", "TF_ENABLE_ONEDNN_OPTS"),
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    loaded_tf, legacy_keras, onednn = result.stdout.split()[-3:]
    assert legacy_keras == "1"  # set by the models package, whatever was imported first
    # Only the processes that train turn oneDNN on: serving keeps TensorFlow's choice.
    assert onednn == "unset"
    if light:
        assert loaded_tf == "False", f"{module} imports TensorFlow"


def _without(*names):
    return {k: v for k, v in os.environ.items() if k not in names}


@pytest.mark.parametrize("users_choice, expected", [(None, "1"), ("0", "0")])
def test_textgen_run_turns_onednn_on_before_tensorflow_loads_unless_the_user_chose(
        tmp_path, users_choice, expected):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("To be, or not to be, that is the question.\n" * 20, encoding="utf-8")
    # The run itself is replaced: what matters is the environment it would start with.
    script = (
        "import os, sys\n"
        "import textgen_cli\n"
        "from pipeline.orchestrators import local\n"
        "def run(config, preset, verbose):\n"
        "    print(os.environ.get('TF_ENABLE_ONEDNN_OPTS', 'unset'), 'tensorflow' in sys.modules)\n"
        "    raise local.RunFailed('stopped by the test')\n"
        "local.run = run\n"
        f"sys.exit(textgen_cli.main(['run', '--data', {str(corpus)!r}, "
        f"'--pipeline-root', {str(tmp_path / 'root')!r}]))\n")
    env = _without("TF_ENABLE_ONEDNN_OPTS")
    if users_choice is not None:
        env["TF_ENABLE_ONEDNN_OPTS"] = users_choice
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            cwd=REPO, env=env, timeout=600)
    assert "stopped by the test" in result.stderr, result.stderr[-3000:]
    assert result.stdout.split() == [expected, "False"]
