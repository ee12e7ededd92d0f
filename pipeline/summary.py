"""What a run did, in numbers: built from ML Metadata and the artifacts, then printed."""
import json
import os
from typing import Any, Dict, List, Optional

from components.evaluator import BASELINE_PREFIX
from models import features
from models.trainer import TRAINING_REPORT, WARM_START_REPORT
from pipeline import metadata

NODE_ORDER = ["TextExampleGen", "StatisticsGen", "SchemaGen", "ExampleValidator", "Transform",
              "Trainer", "latest_blessed_model_resolver", "Evaluator", "Pusher"]


def _vocab_size(transform_graph_uri: str) -> Optional[int]:
    import tensorflow_transform as tft
    try:
        return len(tft.TFTransformOutput(transform_graph_uri).vocabulary_by_name(
            features.VOCAB_NAME))
    except (ValueError, OSError):
        return None


def _validation(evaluation_uri: str) -> List[str]:
    """Human-readable reasons a model was not blessed (empty when it was)."""
    import tensorflow_model_analysis as tfma
    result = tfma.load_validation_result(evaluation_uri)
    reasons = []
    for per_slice in result.metric_validations_per_slice:
        for failure in per_slice.failures:
            value = failure.metric_value.double_value.value
            threshold = failure.metric_threshold
            if failure.metric_key.is_diff:
                reasons.append(
                    f"{failure.metric_key.name} regressed by {value:+.4f} against the baseline, "
                    f"beyond the tolerance ({_threshold_text(threshold.change_threshold)})")
            else:
                reasons.append(
                    f"{failure.metric_key.name} {value:.4f} is outside the bound "
                    f"({_threshold_text(threshold.value_threshold)})")
    if not reasons and not result.validation_ok:
        reasons.append(str(result.validation_details).strip() or "validation failed")
    return reasons


def _threshold_text(threshold) -> str:
    parts = []
    for field in ("upper_bound", "lower_bound", "absolute", "relative"):
        if field in threshold.DESCRIPTOR.fields_by_name and threshold.HasField(field):
            parts.append(f"{field.replace('_', ' ')} {getattr(threshold, field).value:g}")
    return ", ".join(parts)


def collect(pipeline_root: str, settings=None, pipeline_name: Optional[str] = None
            ) -> Dict[str, Any]:
    """The latest run's summary as a dict (also written as JSON to the pipeline root).

    settings: the config's [metadata] section (default: SQLite under the root)."""
    import tensorflow as tf  # its filesystems: the root may be gs://...
    store = metadata.open_store(pipeline_root, settings)
    runs = metadata.pipeline_runs(store, pipeline_name)
    if not runs:
        raise RuntimeError(f"no pipeline runs recorded under {pipeline_root}")
    nodes = metadata.node_runs(store, runs[-1])
    out: Dict[str, Any] = {"run_id": runs[-1].name, "components": {}}
    for node_id in NODE_ORDER + sorted(set(nodes) - set(NODE_ORDER)):
        if node_id in nodes:
            out["components"][node_id] = {"state": nodes[node_id].state,
                                          "seconds": round(nodes[node_id].seconds, 1)}

    def output(node_id, key):
        run = nodes.get(node_id)
        return run.outputs.get(key, [None])[0] if run else None

    examples = output("TextExampleGen", "examples")
    if examples is not None:
        out["splits"] = {split: {"records": metadata.custom(examples, f"{split}_records"),
                                 "chars": metadata.custom(examples, f"{split}_chars")}
                         for split in ("train", "eval")}
        out["spans"] = metadata.custom(examples, "spans")
    graph = output("Transform", "transform_graph")
    if graph is not None:
        out["vocab_size"] = _vocab_size(graph.uri)
    model = output("Trainer", "model")
    if model is not None:
        out["model_uri"] = model.uri
        out["model_id"] = model.id
    model_run = output("Trainer", "model_run")
    if model_run is not None:
        for key, name in (("training", TRAINING_REPORT), ("warm_start", WARM_START_REPORT)):
            path = os.path.join(model_run.uri, name)
            if tf.io.gfile.exists(path):
                with tf.io.gfile.GFile(path, "r") as f:
                    out[key] = json.loads(f.read())
    baseline = nodes.get("Evaluator") and nodes["Evaluator"].inputs.get("baseline_model")
    out["baseline_model_uri"] = baseline[0].uri if baseline else None
    baseline_id = baseline[0].id if baseline else None
    evaluation = output("Evaluator", "evaluation")
    if evaluation is not None:
        props = {name: metadata.custom(evaluation, name)
                 for name in evaluation.custom_properties}
        out["eval"] = {k: v for k, v in props.items()
                       if not k.startswith(BASELINE_PREFIX) and isinstance(v, float)}
        out["baseline_eval"] = {k[len(BASELINE_PREFIX):]: v for k, v in props.items()
                                if k.startswith(BASELINE_PREFIX)} or None
        if out["baseline_eval"] and not baseline:
            # ML Metadata records one input event per artifact: the latest blessed model
            # is the candidate itself (a re-run on a cached model).
            out["baseline_model_uri"] = out.get("model_uri")
            baseline_id = out.get("model_id")
        out["not_blessed_because"] = _validation(evaluation.uri)
    if baseline_id is not None:
        out["baseline_version"] = metadata.pushed_version_of(store, [baseline_id]).get(
            baseline_id)
    blessing = output("Evaluator", "blessing")
    out["blessed"] = bool(blessing is not None and metadata.custom(blessing, "blessed"))
    pushed = output("Pusher", "pushed_model")
    out["pushed"] = bool(pushed is not None and metadata.custom(pushed, "pushed"))
    out["pushed_version"] = metadata.custom(pushed, "pushed_version") if pushed else None
    out["pushed_path"] = metadata.custom(pushed, "pushed_destination") if pushed else None
    with tf.io.gfile.GFile(os.path.join(pipeline_root, "last_run_summary.json"), "w") as f:
        f.write(json.dumps(out, indent=1, default=str))
    return out


def sample(model_dir: str, prompts: List[str], num_chars: int, seed: int = 1) -> List[str]:
    """Generated text from a SavedModel, prompt included, one string per prompt."""
    import tensorflow as tf
    generate = tf.saved_model.load(model_dir).signatures[features.GENERATE_SIGNATURE]
    result = generate(prompts=tf.constant(prompts), num_chars=tf.constant(num_chars),
                      temperature=tf.fill([len(prompts)], 0.8), top_k=tf.constant(0),
                      top_p=tf.constant(1.0), seed=tf.constant(seed))
    return [t.decode("utf-8", errors="replace") for t in result["text"].numpy()]


def format_summary(s: Dict[str, Any], corpus=None, bound: Optional[float] = None,
                   bound_reason: str = "", max_regression: Optional[float] = None) -> str:
    lines = ["", "=== textgen run summary ==="]
    if corpus is not None:
        lines.append(f"corpus: {len(corpus.files)} file(s), {corpus.chars:,} characters, "
                     f"{corpus.distinct_chars} distinct ({corpus.input_base}/{corpus.pattern})")
    if s.get("spans") is not None:
        lines.append(f"span: {s['spans']} (recorded on the examples artifact)")
    for split, c in (s.get("splits") or {}).items():
        if c["records"] is not None:
            lines.append(f"  {split:5s}: {c['records']:,} records, {c['chars']:,} characters")
    if s.get("vocab_size") is not None:
        lines.append(f"vocabulary: {s['vocab_size']} characters "
                     f"(+{features.NUM_RESERVED_IDS} reserved ids: {features.PAD_TOKEN}, "
                     f"{features.UNK_TOKEN})")
    warm = s.get("warm_start")
    trainer_state = s.get("components", {}).get("Trainer", {}).get("state")
    if warm and trainer_state == "CACHED":
        lines.append("training: none (Trainer cached: same data, settings and code)")
    elif warm:
        lines.append(f"training: {warm['reason']}" if warm["warm_start"]
                     else f"training: fresh start: {warm['reason']}")
    training = s.get("training")
    if training and trainer_state != "CACHED":
        for epoch in training["epochs"]:
            lines.append(f"  epoch {epoch['epoch']}: train loss {epoch['loss']:.4f}, eval loss "
                         f"{epoch['val_loss']:.4f} nats/char, {epoch['cpu_seconds'] / 60:.1f} "
                         "CPU-min")
        lines.append(f"  stopped after epoch {training['epochs_run']}: {training['stopped']}; "
                     f"exported epoch {training['exported_epoch']} (lowest eval loss)")
        lines.append(f"  precision: {training['precision']} ({training['precision_reason']}); "
                     f"training took {training['cpu_seconds'] / 60:.1f} CPU-min, "
                     f"{training['wall_seconds'] / 60:.1f} min")
    ev = s.get("eval") or {}
    if "perplexity" in ev:
        lines.append(f"eval: loss {ev['nats_per_char']:.4f} nats/char, "
                     f"{ev['bits_per_char']:.4f} bits/char, perplexity {ev['perplexity']:.3f}")
    if bound is not None:
        lines.append(f"bound: perplexity <= {bound:.3f}{bound_reason}")
    base = s.get("baseline_eval")
    if base and "perplexity" in base:
        version = (f"version {s['baseline_version']}, " if s.get("baseline_version") else "")
        lines.append(f"baseline (latest blessed model: {version}{s.get('baseline_model_uri')}): "
                     f"perplexity {base['perplexity']:.3f} on the same eval split; "
                     f"tolerance +{max_regression or 0:.1%}")
        if "perplexity" in ev:
            lines.append(f"candidate vs baseline: {ev['perplexity']:.3f} vs "
                         f"{base['perplexity']:.3f}")
    elif s.get("components", {}).get("Evaluator"):
        lines.append("baseline: none (no blessed model yet): judged on the bound alone")
    if s.get("blessed"):
        lines.append("blessed: yes")
    else:
        reasons = "; ".join(s.get("not_blessed_because") or []) or "see the Evaluator's output"
        lines.append(f"blessed: NO ({reasons})")
    if s.get("pushed"):
        lines.append(f"pushed: version {s['pushed_version']} → {s['pushed_path']}")
    elif s.get("blessed") and s.get("pushed_version"):
        lines.append(f"pushed: nothing new (this model is already served as version "
                     f"{s['pushed_version']}, {s['pushed_path']})")
    else:
        lines.append("pushed: nothing")
    lines.append("components (state, seconds from ML Metadata):")
    for node_id, c in s.get("components", {}).items():
        lines.append(f"  {node_id:32s} {c['state']:9s} {c['seconds']:8.1f}")
    return "\n".join(lines)
