"""Request counts and latencies under TF Serving's metric names, exposed with
prometheus_client in Prometheus' text format.

TF Serving exports TensorFlow's monitoring metrics with "/" turned into ":", so
/tensorflow/serving/request_count is scraped as :tensorflow:serving:request_count;
dashboards and alerts written for TF Serving read these unchanged. The counts are
exposed as untyped samples: prometheus_client's text format names a counter's TYPE line
`<name>_total`, which TF Serving's names lack (queries, rate() included, work the same).
"""
import threading
from typing import Dict, List, Tuple

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import HistogramMetricFamily, Metric

# Where TF Serving's monitoring config conventionally puts them (on the REST port).
METRICS_PATH = "/monitoring/prometheus/metrics"
CONTENT_TYPE = CONTENT_TYPE_LATEST

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
_LATENCY_LABELS = ("model_name", "API", "entrypoint", "status")

Labels = Tuple[Tuple[str, str], ...]


class Metrics:
    """Thread-safe counters and histograms, rendered for /monitoring/prometheus/metrics."""

    def __init__(self):
        self._lock = threading.Lock()
        self._counters: Dict[str, Dict[Labels, int]] = {REQUEST_COUNT: {}, LOAD_ATTEMPT_COUNT: {}}
        # label values → [per-bucket counts (last one: beyond the largest bound), sum, count]
        self._latency: Dict[Tuple[str, ...], list] = {}
        self._registry = CollectorRegistry(auto_describe=False)
        self._registry.register(self)

    def count_request(self, model_name: str, status: str) -> None:
        self._increment(REQUEST_COUNT, (("model_name", model_name), ("status", status)))

    def count_load(self, model_path: str, succeeded: bool) -> None:
        self._increment(LOAD_ATTEMPT_COUNT, (("model_path", model_path),
                                             ("status", "success" if succeeded else "fail")))

    def observe_latency(self, model_name: str, api: str, entrypoint: str, status: str,
                        seconds: float) -> None:
        micros = seconds * 1e6
        bucket = next((i for i, bound in enumerate(LATENCY_BUCKETS_US) if micros <= bound),
                      len(LATENCY_BUCKETS_US))
        with self._lock:
            cell = self._latency.setdefault((model_name, api, entrypoint, status),
                                            [[0] * (len(LATENCY_BUCKETS_US) + 1), 0.0, 0])
            cell[0][bucket] += 1
            cell[1] += micros
            cell[2] += 1

    def _increment(self, name: str, labels: Labels) -> None:
        with self._lock:
            self._counters[name][labels] = self._counters[name].get(labels, 0) + 1

    def collect(self):
        """prometheus_client's Collector protocol: the current values as metric families."""
        with self._lock:
            counters = {name: dict(cells) for name, cells in self._counters.items()}
            latency = {labels: (list(buckets), total, count)
                       for labels, (buckets, total, count) in self._latency.items()}
        for name, cells in counters.items():
            family = Metric(name, _HELP[name], "unknown")
            for labels, value in sorted(cells.items()):
                family.add_sample(name, dict(labels), value)
            yield family
        family = HistogramMetricFamily(REQUEST_LATENCY, _HELP[REQUEST_LATENCY],
                                       labels=_LATENCY_LABELS)
        for labels, (buckets, total, _) in sorted(latency.items()):
            cumulative, rows = 0, []
            for bound, in_bucket in zip(LATENCY_BUCKETS_US + [float("inf")], buckets,
                                        strict=True):
                cumulative += in_bucket
                rows.append(("+Inf" if bound == float("inf") else f"{bound:g}", cumulative))
            family.add_metric(list(labels), rows, total)
        yield family

    def render(self) -> bytes:
        """Prometheus text exposition format 0.0.4."""
        return generate_latest(self._registry)
