"""`textgen runs`: past pipeline runs as ML Metadata recorded them, one line each.

Reads only ML Metadata (no TFX, no TensorFlow): spans from the examples artifact,
perplexities from the evaluation artifact (components/evaluator.py puts them there),
blessing, and serving versions from the Pusher's output.
"""
import datetime
import json
from typing import Any, Dict, List, Optional

from pipeline import metadata

COLUMNS = [("started", 19), ("span", 6), ("trainer", 8), ("perplexity", 10),
           ("baseline_ppl", 12), ("blessed", 7), ("pushed", 11), ("baseline", 10),
           ("state", 8)]


def _output(nodes, node_id: str, key: str):
    run = nodes.get(node_id)
    return run.outputs.get(key, [None])[0] if run else None


def _state(nodes) -> str:
    states = {n.state for n in nodes.values()}
    if "FAILED" in states:
        return "failed"
    if states & {"RUNNING", "NEW", "UNKNOWN"}:
        return "running"
    return "ok" if "Pusher" in nodes else "partial"


def describe_run(context, nodes) -> Dict[str, Any]:
    """One run as a dict of plain values (None where the run did not get that far)."""
    examples = _output(nodes, "TextExampleGen", "examples")
    evaluation = _output(nodes, "Evaluator", "evaluation")
    blessing = _output(nodes, "Evaluator", "blessing")
    pushed = _output(nodes, "Pusher", "pushed_model")
    model = _output(nodes, "Trainer", "model")
    row: Dict[str, Any] = {
        "run_id": context.name,
        "started": datetime.datetime.fromtimestamp(context.create_time_since_epoch / 1000)
        .strftime("%Y-%m-%d %H:%M:%S"),
        "span": None, "trainer": None, "perplexity": None, "baseline_perplexity": None,
        "blessed": None, "pushed_version": None, "already_served_as": None,
        "baseline_version": None, "state": _state(nodes),
    }
    if examples is not None:
        row["span"] = metadata.custom(examples, "spans")
    if "Trainer" in nodes:
        row["trainer"] = {"COMPLETE": "trained", "CACHED": "cached"}.get(
            nodes["Trainer"].state, nodes["Trainer"].state.lower())
    if evaluation is not None:
        row["perplexity"] = metadata.custom(evaluation, "perplexity")
        row["baseline_perplexity"] = metadata.custom(evaluation, "baseline_perplexity")
    if blessing is not None:
        row["blessed"] = bool(metadata.custom(blessing, "blessed"))
    if pushed is not None and metadata.custom(pushed, "pushed_version"):
        key = "pushed_version" if metadata.custom(pushed, "pushed") else "already_served_as"
        row[key] = metadata.custom(pushed, "pushed_version")
    baseline = nodes["Evaluator"].inputs.get("baseline_model") if "Evaluator" in nodes else None
    if baseline:
        row["baseline_model_id"] = baseline[0].id
    elif row["baseline_perplexity"] is not None and model is not None:
        # One input event per artifact: the baseline was the candidate itself.
        row["baseline_model_id"] = model.id
    return row


def list_runs(pipeline_root: str, settings=None, pipeline_name: Optional[str] = None
              ) -> List[Dict[str, Any]]:
    """Every run, oldest first."""
    store = metadata.open_store(pipeline_root, settings)
    node_of = metadata.execution_nodes(store)
    rows = [describe_run(context, metadata.node_runs(store, context, node_of))
            for context in metadata.pipeline_runs(store, pipeline_name)]
    versions = metadata.pushed_version_of(
        store, {r["baseline_model_id"] for r in rows if r.get("baseline_model_id")})
    for row in rows:
        model_id = row.pop("baseline_model_id", None)
        if model_id is not None:
            row["baseline_version"] = versions.get(model_id, f"model #{model_id}")
    return rows


def _cell(value, fmt: str = "{}") -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return fmt.format(value)


def format_table(rows: List[Dict[str, Any]]) -> str:
    if not rows:
        return "no runs recorded yet"
    lines = ["  ".join(name.ljust(width) for name, width in COLUMNS).rstrip()]
    for r in rows:
        pushed = _cell(r["pushed_version"]) if r["pushed_version"] else \
            f"={r['already_served_as']}" if r["already_served_as"] else "-"
        cells = [r["started"], _cell(r["span"]), _cell(r["trainer"]),
                 _cell(r["perplexity"], "{:.3f}"), _cell(r["baseline_perplexity"], "{:.3f}"),
                 _cell(r["blessed"]), pushed, _cell(r["baseline_version"]), r["state"]]
        lines.append("  ".join(str(c).ljust(w) for c, (_, w) in zip(cells, COLUMNS)).rstrip())
    lines.append("pushed: the version this run pushed; =V: its model was already served as V. "
                 "baseline: the version the candidate was compared against.")
    return "\n".join(lines)


def format_json(rows: List[Dict[str, Any]]) -> str:
    return json.dumps(rows, indent=1)
