"""Request counts and latencies in Prometheus' text format, under TF Serving's metric names.

TF Serving exports TensorFlow's monitoring metrics with "/" turned into ":", so
/tensorflow/serving/request_count is scraped as :tensorflow:serving:request_count;
dashboards and alerts written for TF Serving read these unchanged.
"""
import threading
from typing import Dict, List, Tuple

# Where TF Serving's monitoring config conventionally puts them (on the REST port).
METRICS_PATH = "/monitoring/prometheus/metrics"

REQUEST_COUNT = ":tensorflow:serving:request_count"
REQUEST_LATENCY = ":tensorflow:serving:request_latency"
LOAD_ATTEMPT_COUNT = ":tensorflow:cc:saved_model:load_attempt_count"

# TF Serving's request_latency buckets: microseconds, Exponential(10, 1.8, 33) (~20 min).
LATENCY_BUCKETS_US: List[float] = [10 * 1.8 ** i for i in range(33)]

_HELP = {
    REQUEST_COUNT: "The total number of requests.",
    REQUEST_LATENCY: "Distribution of wall time (in microseconds) for Tensorflow Serving request.",
    LOAD_ATTEMPT_COUNT: "The number of times a SavedModel was successfully loaded.",
}

Labels = Tuple[Tuple[str, str], ...]


class Metrics:
    """Thread-safe counters and histograms, rendered for /monitoring/prometheus/metrics."""

    def __init__(self):
        self._lock = threading.Lock()
        self._counters: Dict[str, Dict[Labels, int]] = {REQUEST_COUNT: {}, LOAD_ATTEMPT_COUNT: {}}
        # labels → [per-bucket counts (last one: beyond the largest bound), sum, count]
        self._latency: Dict[Labels, list] = {}

    def count_request(self, model_name: str, status: str) -> None:
        self._increment(REQUEST_COUNT, (("model_name", model_name), ("status", status)))

    def count_load(self, model_path: str, succeeded: bool) -> None:
        self._increment(LOAD_ATTEMPT_COUNT, (("model_path", model_path),
                                             ("status", "success" if succeeded else "fail")))

    def observe_latency(self, model_name: str, api: str, entrypoint: str, status: str,
                        seconds: float) -> None:
        labels = (("model_name", model_name), ("API", api), ("entrypoint", entrypoint),
                  ("status", status))
        micros = seconds * 1e6
        bucket = next((i for i, bound in enumerate(LATENCY_BUCKETS_US) if micros <= bound),
                      len(LATENCY_BUCKETS_US))
        with self._lock:
            cell = self._latency.setdefault(labels, [[0] * (len(LATENCY_BUCKETS_US) + 1), 0.0, 0])
            cell[0][bucket] += 1
            cell[1] += micros
            cell[2] += 1

    def _increment(self, name: str, labels: Labels) -> None:
        with self._lock:
            self._counters[name][labels] = self._counters[name].get(labels, 0) + 1

    def render(self) -> str:
        """Prometheus text exposition format 0.0.4."""
        lines = []
        with self._lock:
            for name, cells in self._counters.items():
                lines += [f"# HELP {name} {_HELP[name]}", f"# TYPE {name} counter"]
                lines += [f"{name}{_labels(labels)} {value}"
                          for labels, value in sorted(cells.items())]
            lines += [f"# HELP {REQUEST_LATENCY} {_HELP[REQUEST_LATENCY]}",
                      f"# TYPE {REQUEST_LATENCY} histogram"]
            for labels, (buckets, total, count) in sorted(self._latency.items()):
                cumulative = 0
                bounds = LATENCY_BUCKETS_US + [float("inf")]
                for bound, in_bucket in zip(bounds, buckets, strict=True):
                    cumulative += in_bucket
                    le = "+Inf" if bound == float("inf") else f"{bound:g}"
                    lines.append(f"{REQUEST_LATENCY}_bucket{_labels(labels + (('le', le),))} "
                                 f"{cumulative}")
                lines.append(f"{REQUEST_LATENCY}_sum{_labels(labels)} {total:.1f}")
                lines.append(f"{REQUEST_LATENCY}_count{_labels(labels)} {count}")
        return "\n".join(lines) + "\n"


def _labels(labels: Labels) -> str:
    def escape(value: str) -> str:
        return value.replace("\\", r"\\").replace('"', r"\"").replace("\n", r"\n")
    return "{" + ",".join(f'{key}="{escape(value)}"' for key, value in labels) + "}"
