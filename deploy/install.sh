#!/usr/bin/env bash
# Installs textgen as every deployed environment gets it: a virtual environment with the
# wheel (not editable) and its dependencies at the versions of requirements/lock.txt.
# deploy/Dockerfile runs it to build the pipeline image, and tests/test_packaging.py runs
# it into a temporary folder: the tested path and the image's are the same commands.
#
#   deploy/install.sh ENV_DIR WHEEL LOCK_FILE
#
# uv resolves this stack in seconds (pip backtracks for hours over it): $UV, else `uv` on
# PATH. $PYTHON picks the interpreter (default 3.11; uv never downloads one here).
set -euo pipefail
if [ $# -ne 3 ]; then
    echo "usage: $0 ENV_DIR WHEEL LOCK_FILE  (build the wheel with: make wheel)" >&2
    exit 2
fi
env_dir=$1 wheel=$2 lock=$3
for file in "$wheel" "$lock"; do
    [ -f "$file" ] || { echo "install.sh: $file: no such file" >&2; exit 2; }
done
uv=${UV:-$(command -v uv || true)}
if [ -z "$uv" ]; then
    echo "install.sh: uv not found: 'pip install uv', or set UV to its path" >&2
    exit 2
fi
export UV_PYTHON_DOWNLOADS=never

"$uv" venv --quiet --python "${PYTHON:-3.11}" "$env_dir"
# The wheel's own requirements (and the Airflow DAG's and Vertex compiler's extras),
# each held to the lock's version: what the tests ran against is what gets deployed.
"$uv" pip install --quiet --python "$env_dir/bin/python" --constraint "$lock" \
    "textgen[airflow,vertex] @ file://$(realpath "$wheel")"
"$env_dir/bin/textgen" --help >/dev/null
echo "textgen $("$env_dir/bin/python" -c 'import importlib.metadata as m; print(m.version("textgen"))') installed in $env_dir"
