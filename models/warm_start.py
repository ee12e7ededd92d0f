"""Warm start: begin training from the latest blessed model's weights.

The starting point is the newest version in the serving directory: the Pusher puts
every blessed model there (once), so it is the latest blessed model. It is found here
rather than through a Trainer input (a `base_model` channel from the blessed-model
resolver) because such an input changes whenever a model gets blessed, which would
turn a re-run with no new data into a cache miss and a new training.

The weights carry over when every character of the new vocabulary is in the old one
and the network has the same shape. tf.Transform orders the vocabulary by frequency,
so a new span usually reorders it: the embedding rows and output columns are gathered
in the new order. A span without some rare character (a smaller vocabulary) drops
that character's row and column. A new character (the vocabulary grew) has no trained
row to start from, and a changed shape has no weights that fit: both mean a fresh
start, and the report says why.
"""
import json
import logging
import os
from typing import Any, Dict, List, Optional, Tuple

import tensorflow as tf
import tf_keras

from models import features
from models import model as char_model

logger = logging.getLogger(__name__)

# Written beside every export, in the folder TF Serving leaves to its users.
MODEL_INFO = os.path.join("assets.extra", "textgen_model.json")


def write_model_info(export_dir: str, vocab: List[str], mode: str,
                     model_settings: Optional[Dict[str, Any]]) -> None:
    tf.io.gfile.makedirs(os.path.join(export_dir, "assets.extra"))
    with tf.io.gfile.GFile(os.path.join(export_dir, MODEL_INFO), "w") as f:
        f.write(json.dumps({"vocab": vocab, "mode": mode, "model": model_settings or {}},
                           ensure_ascii=False))


def read_model_info(model_dir: str) -> Optional[Dict[str, Any]]:
    path = os.path.join(model_dir, MODEL_INFO)
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path, "r") as f:
        return json.loads(f.read())


def latest_served(serving_dir: str) -> Optional[Tuple[int, str]]:
    """(version, path) of the newest version that carries model info, if any."""
    if not serving_dir or not tf.io.gfile.isdir(serving_dir):
        return None
    versions = sorted((int(name.rstrip("/")) for name in tf.io.gfile.listdir(serving_dir)
                       if name.rstrip("/").isdigit()), reverse=True)
    for version in versions:
        path = os.path.join(serving_dir, str(version))
        if tf.io.gfile.exists(os.path.join(path, MODEL_INFO)):
            return version, path
    return None


def _shape_change(old: Dict[str, Any], new: Dict[str, Any]) -> List[str]:
    return [f"{key} {old.get(key)} → {new.get(key)}" for key in sorted(set(old) | set(new))
            if key != "dropout" and old.get(key) != new.get(key)]


def _chars(chars) -> str:
    shown = ", ".join(repr(c) for c in sorted(chars)[:10])
    return shown + (", ..." if len(chars) > 10 else "")


def plan(vocab: List[str], model_settings: Dict[str, Any], mode: str,
         served: Optional[Tuple[int, str]]) -> Dict[str, Any]:
    """Whether to warm start from `served`, and why (or why not): a JSON-able report."""
    if served is None:
        return {"warm_start": False, "reason": "no blessed model in the serving directory yet"}
    version, path = served
    info = read_model_info(path)
    report = {"warm_start": False, "version": version, "from": path}
    old_vocab = info["vocab"]
    added, removed = set(vocab) - set(old_vocab), set(old_vocab) - set(vocab)
    if added:
        gone = f"; {len(removed)} gone" if removed else ""
        report["reason"] = (f"the vocabulary grew by {len(added)} character(s) since version "
                            f"{version} ({_chars(added)}{gone}): no trained embedding rows "
                            "for them")
    elif info.get("mode") != mode:
        report["reason"] = (f"data.mode changed since version {version} "
                            f"({info.get('mode')} → {mode}): fresh start")
    elif _shape_change(info.get("model", {}), model_settings):
        report["reason"] = (f"the model's shape changed since version {version} "
                            f"({'; '.join(_shape_change(info.get('model', {}), model_settings))})"
                            ": fresh start")
    elif removed:
        report.update(warm_start=True, reason=(
            f"warm start from version {version} ({len(vocab)} of its {len(old_vocab)} "
            f"characters; {_chars(removed)} not in this data, dropped)"))
    else:
        report.update(warm_start=True, reason=(
            f"warm start from version {version} (same {len(vocab)} characters"
            f"{', reordered' if old_vocab != vocab else ''})"))
    return report


def permutation(old_vocab: List[str], new_vocab: List[str]) -> List[int]:
    """new id → old id; every character of new_vocab must be in old_vocab."""
    old_id = {c: i + features.NUM_RESERVED_IDS for i, c in enumerate(old_vocab)}
    return list(range(features.NUM_RESERVED_IDS)) + [old_id[c] for c in new_vocab]


def load_weights(model: tf_keras.Model, vocab: List[str], model_dir: str) -> None:
    """Sets `model`'s weights from the SavedModel in model_dir (a superset of `vocab`'s
    characters, same shape), gathering the vocabulary axis in `vocab`'s order."""
    info = read_model_info(model_dir)
    old_vocab = info["vocab"]
    old = char_model.build_model(len(old_vocab) + features.NUM_RESERVED_IDS,
                                 char_model.settings_of(info["model"]))
    # The SavedModel's variables are a checkpoint whose root is the export's Generator,
    # holding the Keras model as `model`.
    status = tf.train.Checkpoint(model=old).read(os.path.join(model_dir, "variables",
                                                              "variables"))
    status.expect_partial().assert_existing_objects_matched()
    order = permutation(old_vocab, vocab)
    for layer in model.layers:
        if not layer.weights:  # Input, Dropout: nothing to carry (dropout is not a shape)
            continue
        weights = old.get_layer(layer.name).get_weights()
        if layer.name == "embedding":
            weights = [weights[0][order]]
        elif layer.name == "logits":
            weights = [weights[0][:, order], weights[1][order]]
        layer.set_weights(weights)


def apply(model: tf_keras.Model, vocab: List[str], model_settings: Dict[str, Any], mode: str,
          serving_dir: Optional[str], enabled: bool) -> Dict[str, Any]:
    """Warm-starts `model` when it can; returns the report (also for the summary)."""
    if not enabled:
        return {"warm_start": False, "reason": "warm start is off (train.warm_start = false)"}
    report = plan(vocab, model_settings, mode, latest_served(serving_dir))
    if report["warm_start"]:
        load_weights(model, vocab, report["from"])
    logger.info("warm start: %s", report["reason"])
    return report
