"""What a run did, in numbers: its ML Metadata record (pipeline/records.py) with what
only the artifacts hold, then printed."""
import dataclasses
import json
import os
from typing import Any, Dict, List, Optional

from components import names
from models import features
from models.settings import DEFAULT_SAMPLING
from pipeline import records

SUMMARY_FILE = "last_run_summary.json"


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


def collect(record: records.RunRecord, pipeline_root: str) -> Dict[str, Any]:
    """A run's summary as a dict: its record plus what only the artifacts hold (vocabulary
    size, epochs, warm start, why not blessed); also written as JSON to the pipeline root."""
    import tensorflow as tf  # its filesystems: the root may be gs://...
    out = {k: v for k, v in dataclasses.asdict(record).items()
           if k not in ("trainer", "transform_graph_uri", "model_run_uri", "evaluation_uri",
                        "baseline_model_id", "state", "started")}
    out["blessed"], out["pushed"] = bool(record.blessed), bool(record.pushed)
    if record.transform_graph_uri is not None:
        out["vocab_size"] = _vocab_size(record.transform_graph_uri)
    if record.model_run_uri is not None:
        for key, name in (("training", features.TRAINING_REPORT),
                          ("warm_start", features.WARM_START_REPORT)):
            path = os.path.join(record.model_run_uri, name)
            if tf.io.gfile.exists(path):
                with tf.io.gfile.GFile(path, "r") as f:
                    out[key] = json.loads(f.read())
    if record.evaluation_uri is not None:
        out["not_blessed_because"] = _validation(record.evaluation_uri)
    with tf.io.gfile.GFile(os.path.join(pipeline_root, SUMMARY_FILE), "w") as f:
        f.write(json.dumps(out, indent=1, default=str))
    return out


def sample(model_dir: str, prompts: List[str], num_chars: int, seed: int = 1) -> List[str]:
    """Generated text from a SavedModel, prompt included, one string per prompt. Prompt i
    draws with seed + i, as the client library seeds rows: a row's draws depend only on its
    own seed, so prompts sharing one would all continue alike."""
    import tensorflow as tf
    generate = tf.saved_model.load(model_dir).signatures[features.GENERATE_SIGNATURE]
    result = generate(prompts=tf.constant(prompts), num_chars=tf.constant(num_chars),
                      temperature=tf.fill([len(prompts)], DEFAULT_SAMPLING.temperature),
                      top_k=tf.constant(DEFAULT_SAMPLING.top_k),
                      top_p=tf.constant(DEFAULT_SAMPLING.top_p),
                      seed=tf.range(seed, seed + len(prompts), dtype=tf.int32))
    return [t.decode("utf-8", errors="replace") for t in result["text"].numpy()]


def format_summary(s: Dict[str, Any], corpus=None, bound: Optional[float] = None,
                   bound_reason: str = "", max_regression: Optional[float] = None,
                   log_path: Optional[str] = None) -> str:
    lines = ["", "=== textgen run summary ==="]
    if corpus is not None:
        lines.append(f"corpus: {len(corpus.files)} file(s), {corpus.chars:,} characters, "
                     f"{corpus.distinct_chars} distinct ({corpus.input_base}/{corpus.pattern})")
    if s.get("spans") is not None:
        lines.append(f"span: {s['spans']} (the examples trained on)")
    for split, c in (s.get("splits") or {}).items():
        if c["records"] is not None:
            lines.append(f"  {split:5s}: {c['records']:,} records, {c['chars']:,} characters")
    if s.get("vocab_size") is not None:
        lines.append(f"vocabulary: {s['vocab_size']} characters "
                     f"(+{features.NUM_RESERVED_IDS} reserved ids: {features.PAD_TOKEN}, "
                     f"{features.UNK_TOKEN})")
    warm = s.get("warm_start")
    trainer_state = s.get("components", {}).get(names.TRAINER, {}).get("state")
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
    elif s.get("components", {}).get(names.EVALUATOR):
        lines.append("baseline: none (no blessed model yet): judged on the bound alone")
    if s.get("blessed"):
        lines.append("blessed: yes")
    else:
        reasons = "; ".join(s.get("not_blessed_because") or []) or "see the Evaluator's output"
        lines.append(f"blessed: NO ({reasons})")
    if s.get("infra_blessed") is not None:
        latency = s.get("generate_latency_ms")
        measured = "" if latency is None else f"; generate latency {latency:.1f} ms"
        verdict = "passed" if s["infra_blessed"] else "FAILED"
        lines.append(f"infra validation (served in a process of its own): {verdict}{measured}")
    if s.get("pushed"):
        lines.append(f"pushed: version {s['pushed_version']} → {s['pushed_path']}")
    elif s.get("blessed") and s.get("pushed_version"):
        lines.append(f"pushed: nothing new (this model is already served as version "
                     f"{s['pushed_version']}, {s['pushed_path']})")
    elif s.get("not_pushed_because"):
        lines.append(f"pushed: nothing ({s['not_pushed_because']})")
    else:
        lines.append("pushed: nothing")
    lines.append("components (state, seconds from ML Metadata):")
    for node_id, c in s.get("components", {}).items():
        lines.append(f"  {node_id:32s} {c['state']:9s} {c['seconds']:8.1f}")
    if log_path:
        lines.append(f"log (TFX, Beam and TensorFlow output): {log_path}")
    return "\n".join(lines)
