"""One pipeline run as ML Metadata recorded it: read once here, formatted twice, as a row
of `textgen runs` (pipeline/runs.py) and as the run summary (pipeline/summary.py).

Reads only ML Metadata (no TFX, no TensorFlow): node states and times, the spans and
split sizes on the examples artifacts trained on, the perplexities the Evaluator
copied onto its evaluation artifact (components/evaluator.py), blessing, infra
validation (components/infra_validator.py), and the serving versions from the Pusher's
output, or why it pushed nothing.
"""
import dataclasses
import datetime
from typing import Dict, List, Optional

from components import names, spans
from pipeline import metadata


@dataclasses.dataclass
class RunRecord:
    run_id: str
    started: str  # local time, YYYY-MM-DD HH:MM:SS
    state: str  # ok, partial (stopped before the Pusher), failed, running
    components: Dict[str, Dict[str, object]]  # node id → {"state", "seconds"}, pipeline order
    spans: Optional[str] = None  # the spans trained on, e.g. "3-5"; None without {SPAN}
    # split → records, chars of the spans trained on
    splits: Optional[Dict[str, Dict[str, Optional[int]]]] = None
    trainer: Optional[str] = None  # trained, cached, failed, ...
    transform_graph_uri: Optional[str] = None
    model_id: Optional[int] = None
    model_uri: Optional[str] = None
    model_run_uri: Optional[str] = None
    evaluation_uri: Optional[str] = None
    eval: Optional[Dict[str, float]] = None  # the candidate's metrics
    baseline_eval: Optional[Dict[str, float]] = None
    baseline_model_id: Optional[int] = None
    baseline_model_uri: Optional[str] = None
    baseline_version: Optional[str] = None  # the serving version of the baseline model
    blessed: Optional[bool] = None
    infra_blessed: Optional[bool] = None  # the candidate loaded and answered when served
    generate_latency_ms: Optional[float] = None  # the InfraValidator's measure
    pushed: Optional[bool] = None  # False also when the model was already served
    not_pushed_because: Optional[str] = None  # why the Pusher refused it
    pushed_version: Optional[str] = None  # the version pushed, or already serving it
    pushed_path: Optional[str] = None


def _state(nodes) -> str:
    states = {n.state for n in nodes.values()}
    if "FAILED" in states:
        return "failed"
    if states & {"RUNNING", "NEW", "UNKNOWN"}:
        return "running"
    return "ok" if names.PUSHER in nodes else "partial"


def _describe(context, nodes: Dict[str, metadata.NodeRun]) -> RunRecord:
    def output(node_id, key):
        run = nodes.get(node_id)
        return run.outputs.get(key, [None])[0] if run else None

    order = [n for n in names.NODE_ORDER if n in nodes] + sorted(set(nodes) - set(names.NODE_ORDER))
    record = RunRecord(
        run_id=context.name,
        started=datetime.datetime.fromtimestamp(context.create_time_since_epoch / 1000)
        .strftime("%Y-%m-%d %H:%M:%S"),
        state=_state(nodes),
        components={n: {"state": nodes[n].state, "seconds": round(nodes[n].seconds, 1)}
                    for n in order})
    examples = output(names.EXAMPLE_GEN, names.EXAMPLES)
    if examples is not None:
        # What Transform and the Trainer read: the span resolver's range when there is one
        # (components/span_resolver.py), else the ExampleGen's own output.
        resolver = nodes.get(names.SPAN_RESOLVER)
        read = (resolver.outputs.get(names.EXAMPLES) if resolver else None) or [examples]
        record.spans = metadata.custom(examples, names.SPANS)
        if record.spans is not None and resolver:
            record.spans = spans.describe(metadata.custom(a, names.SPAN) for a in read)
        # train: what the Trainer read; eval: what the Evaluator scored, the newest span's
        # eval split only (pipeline/pipeline.py).
        scored = {names.TRAIN: read, names.EVAL: [examples]}
        record.splits = {split: {
            "records": _total(scored[split], names.records_property(split)),
            "chars": _total(scored[split], names.chars_property(split))}
            for split in (names.TRAIN, names.EVAL)}
    graph = output(names.TRANSFORM, names.TRANSFORM_GRAPH)
    record.transform_graph_uri = graph.uri if graph is not None else None
    if names.TRAINER in nodes:
        state = nodes[names.TRAINER].state
        record.trainer = {"COMPLETE": "trained", "CACHED": "cached"}.get(state, state.lower())
    model = output(names.TRAINER, names.MODEL)
    if model is not None:
        record.model_id, record.model_uri = model.id, model.uri
    model_run = output(names.TRAINER, names.MODEL_RUN)
    record.model_run_uri = model_run.uri if model_run is not None else None
    evaluation = output(names.EVALUATOR, names.EVALUATION)
    if evaluation is not None:
        record.evaluation_uri = evaluation.uri
        props = {name: metadata.custom(evaluation, name) for name in evaluation.custom_properties}
        record.eval = {k: v for k, v in props.items()
                       if not k.startswith(names.BASELINE_PREFIX) and isinstance(v, float)}
        record.baseline_eval = {k[len(names.BASELINE_PREFIX):]: v for k, v in props.items()
                                if k.startswith(names.BASELINE_PREFIX)} or None
    evaluator = nodes.get(names.EVALUATOR)
    baseline = evaluator.inputs.get(names.BASELINE_MODEL) if evaluator else None
    if baseline:
        record.baseline_model_id, record.baseline_model_uri = baseline[0].id, baseline[0].uri
    elif record.baseline_eval and model is not None:
        # ML Metadata records one input event per artifact: when the latest blessed model
        # is the candidate itself (a re-run on a cached model), only `model` is recorded.
        record.baseline_model_id, record.baseline_model_uri = model.id, model.uri
    blessing = output(names.EVALUATOR, names.BLESSING)
    if blessing is not None:
        record.blessed = bool(metadata.custom(blessing, names.BLESSED))
    infra = output(names.INFRA_VALIDATOR, names.BLESSING)
    if infra is not None:
        record.infra_blessed = bool(metadata.custom(infra, names.BLESSED))
        record.generate_latency_ms = metadata.custom(infra, names.LATENCY_MS)
    pushed = output(names.PUSHER, names.PUSHED_MODEL)
    if pushed is not None:
        record.not_pushed_because = metadata.custom(pushed, names.NOT_PUSHED_BECAUSE) or None
        record.pushed = bool(metadata.custom(pushed, names.PUSHED))
        record.pushed_version = metadata.custom(pushed, names.PUSHED_VERSION) or None
        record.pushed_path = metadata.custom(pushed, names.PUSHED_DESTINATION) or None
    return record


def _total(artifacts, name: str) -> Optional[int]:
    values = [metadata.custom(a, name) for a in artifacts]
    return None if not values or None in values else sum(values)


def read_runs(store, pipeline_name: Optional[str] = None,
              last: Optional[int] = None) -> List[RunRecord]:
    """The pipeline's runs, oldest first (only the last `last` when given)."""
    contexts = metadata.pipeline_runs(store, pipeline_name)
    if last is not None:
        contexts = contexts[-last:] if last > 0 else []
    node_of = metadata.execution_nodes(store)
    records = [_describe(c, metadata.node_runs(store, c, node_of)) for c in contexts]
    versions = metadata.pushed_version_of(
        store, {r.baseline_model_id for r in records if r.baseline_model_id is not None})
    for record in records:
        if record.baseline_model_id is not None:
            record.baseline_version = versions.get(record.baseline_model_id,
                                                   f"model #{record.baseline_model_id}")
    return records


def latest_run(pipeline_root: str, settings=None,
               pipeline_name: Optional[str] = None) -> RunRecord:
    """The latest run of the pipeline; settings: the config's [metadata] section."""
    records = read_runs(metadata.open_store(pipeline_root, settings), pipeline_name, last=1)
    if not records:
        raise RuntimeError(f"no pipeline runs recorded under {pipeline_root}")
    return records[0]
