#!/usr/bin/env bash
# TensorFlow Serving for textgen with plain `docker run` (the compose file's twin).
#
#   deploy/serve.sh [gpu|cpu] [SERVING_DIR]
#
# SERVING_DIR defaults to serving_model/ beside deploy/ (`textgen run`'s --serving-dir).
# Server-side batching is on (config/batching.config); TEXTGEN_ENABLE_BATCHING=false turns it off.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
variant="${1:-gpu}"
serving_dir="${2:-$here/../serving_model}"

case "$variant" in
  gpu) image="tensorflow/serving:2.16.1-gpu"; gpu_flags=(--gpus all) ;;
  cpu) image="tensorflow/serving:2.16.1"; gpu_flags=() ;;
  *) echo "usage: $0 [gpu|cpu] [SERVING_DIR]" >&2; exit 2 ;;
esac

if ! compgen -G "$serving_dir/[0-9]*/saved_model.pb" >/dev/null; then
  echo "$0: no <version>/saved_model.pb under $serving_dir: run \`textgen run\` first (its" \
       "Pusher writes there) or pass the serving directory" >&2
  exit 2
fi
serving_dir="$(cd "$serving_dir" && pwd)"

exec docker run --rm --name "textgen-serving-$variant" ${gpu_flags[@]+"${gpu_flags[@]}"} \
  -p 8500:8500 -p 8501:8501 \
  --mount "type=bind,source=$serving_dir,target=/models/textgen,readonly" \
  --mount "type=bind,source=$here/config,target=/config,readonly" \
  --entrypoint tensorflow_model_server "$image" \
  --port=8500 --rest_api_port=8501 --rest_api_timeout_in_ms=600000 \
  --model_config_file=/config/models.config --model_config_file_poll_wait_seconds=60 \
  --file_system_poll_wait_seconds=1 \
  --monitoring_config_file=/config/monitoring.config \
  --enable_batching="${TEXTGEN_ENABLE_BATCHING:-true}" \
  --batching_parameters_file=/config/batching.config \
  --grpc_max_threads=128 --rest_api_num_threads=128
