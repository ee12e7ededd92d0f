"""`textgen runs`: past pipeline runs as ML Metadata recorded them, one line each.

The records come from pipeline/records.py (ML Metadata only: no TFX, no TensorFlow);
this module lays them out as a table or JSON.
"""
import json
from typing import Any, Dict, List, Optional

from components import names
from pipeline import metadata, records

COLUMNS = [("started", 19), ("span", 6), ("trainer", 8), ("perplexity", 10),
           ("baseline_ppl", 12), ("blessed", 7), ("served_ok", 9), ("pushed", 11),
           ("baseline", 10), ("state", 8)]


def row(record: records.RunRecord) -> Dict[str, Any]:
    """One run as a dict of plain values (None where the run did not get that far)."""
    pushed = record.pushed_version if record.pushed else None
    return {
        "run_id": record.run_id, "started": record.started, "span": record.spans,
        "trainer": record.trainer,
        "perplexity": (record.eval or {}).get(names.PERPLEXITY),
        "baseline_perplexity": (record.baseline_eval or {}).get(names.PERPLEXITY),
        "blessed": record.blessed, "infra_validated": record.infra_blessed,
        "generate_latency_ms": record.generate_latency_ms, "pushed_version": pushed,
        "already_served_as": None if record.pushed else record.pushed_version,
        "not_pushed_because": record.not_pushed_because,
        "baseline_version": record.baseline_version, "state": record.state,
    }


def list_runs(pipeline_root: str, settings=None, pipeline_name: Optional[str] = None,
              last: Optional[int] = None) -> List[Dict[str, Any]]:
    """Every run (or the last `last`), oldest first."""
    store = metadata.open_store(pipeline_root, settings)
    return [row(r) for r in records.read_runs(store, pipeline_name, last)]


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
                 _cell(r["blessed"]), _cell(r["infra_validated"]), pushed,
                 _cell(r["baseline_version"]), r["state"]]
        lines.append("  ".join(str(c).ljust(w) for c, (_, w) in zip(cells, COLUMNS)).rstrip())
        if r["blessed"] and r["not_pushed_because"]:  # why not, when `blessed` does not say
            lines.append(f"{'':19}  not pushed: {r['not_pushed_because']}")
    lines.append("served_ok: the candidate loaded and answered in a serving process of its own "
                 "(InfraValidator). pushed: the version this run pushed; =V: its model was "
                 "already served as V. baseline: the version the candidate was compared "
                 "against.")
    return "\n".join(lines)


def format_json(rows: List[Dict[str, Any]]) -> str:
    return json.dumps(rows, indent=1)
