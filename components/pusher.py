"""Pusher: copies a blessed model to <serving_dir>/<version>/, atomically and only once.

Why not TFX's Pusher: it copies straight into the version directory (a TF Serving
instance polling the folder can load a half-written model), and it pushes the same
model again under a new version whenever the Evaluator re-runs on a cached model.
Here the copy goes to a hidden temporary folder that is renamed into place, and a
digest of the SavedModel is kept beside each version so a model is pushed at most once.

Several pipeline roots may push to one serving directory (their run locks are per
root): a temporary folder is named after its pushing process and host, and only a dead
process's folder on this host is removed as a leftover. A killed push on another host
leaves its hidden folder behind (never loaded: TF Serving loads integer names only).
"""
import errno
import hashlib
import json
import logging
import os
import shutil
import socket
import time
from typing import Any, Dict, List, Optional

from tfx import types
from tfx.dsl.components.base import base_component, base_executor, executor_spec
from tfx.types import artifact_utils, standard_artifacts
from tfx.types.standard_component_specs import MODEL_BLESSING_KEY as MODEL_BLESSING
from tfx.types.component_spec import ChannelParameter, ExecutionParameter
from tfx.utils import path_utils

from components import names

logger = logging.getLogger(__name__)

# TF Serving only loads children whose names are integers; these names are never loaded.
TMP_PREFIX = ".tmp-"
# Kept in assets.extra/, the folder TF Serving leaves to its users.
PUSH_RECORD = os.path.join("assets.extra", "textgen_push.json")



class PushError(RuntimeError):
    """The serving directory cannot take the push; nothing partial was left there."""


def model_digest(model_dir: str) -> str:
    """sha256 over the SavedModel's files (names and bytes), independent of its location."""
    digest = hashlib.sha256()
    for root, dirs, files in os.walk(model_dir):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(root, name)
            rel = os.path.relpath(path, model_dir)
            if rel == PUSH_RECORD:
                continue
            digest.update(rel.encode() + b"\0")
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
    return digest.hexdigest()


def versions(serving_dir: str) -> List[int]:
    """The version numbers present in a serving directory, ascending."""
    if not os.path.isdir(serving_dir):
        return []
    return sorted(int(n) for n in os.listdir(serving_dir)
                  if n.isdigit() and os.path.isdir(os.path.join(serving_dir, n)))


def find_pushed(serving_dir: str, digest: str) -> Optional[int]:
    """The version already holding a model with this digest, if any."""
    for version in versions(serving_dir):
        record = os.path.join(serving_dir, str(version), PUSH_RECORD)
        try:
            with open(record, encoding="utf-8") as f:
                if json.load(f).get("digest") == digest:
                    return version
        except (OSError, ValueError):
            continue
    return None


def _temporary_name(version: int) -> str:
    return f"{TMP_PREFIX}{version}-{socket.gethostname()}-{os.getpid()}"


def _is_leftover(name: str) -> bool:
    """A temporary folder of a push whose process on this host is gone."""
    host, _, pid = name[len(TMP_PREFIX):].partition("-")[2].rpartition("-")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


def remove_stale_temporaries(serving_dir: str) -> None:
    """Leftovers of pushes that were killed; other processes' pushes in flight are kept."""
    if os.path.isdir(serving_dir):
        for name in os.listdir(serving_dir):
            if name.startswith(TMP_PREFIX) and _is_leftover(name):
                shutil.rmtree(os.path.join(serving_dir, name), ignore_errors=True)


def push(model_dir: str, serving_dir: str, source: Dict[str, Any]) -> Dict[str, Any]:
    """Copies model_dir to serving_dir/<new version> atomically, unless already there.

    Returns {"pushed": bool, "version": int, "path": str, "digest": str}.
    """
    digest = model_digest(model_dir)
    try:
        os.makedirs(serving_dir, exist_ok=True)
    except OSError as err:
        raise PushError(f"serving dir {serving_dir}: cannot create it ({err.strerror}); "
                        "choose a writable --serving-dir") from None
    remove_stale_temporaries(serving_dir)
    existing = find_pushed(serving_dir, digest)
    if existing is not None:
        return {"pushed": False, "version": existing, "digest": digest,
                "path": os.path.join(serving_dir, str(existing))}
    # TF Serving orders versions numerically; seconds since the epoch, as TFX's Pusher.
    version = max([int(time.time())] + [v + 1 for v in versions(serving_dir)])
    tmp = os.path.join(serving_dir, _temporary_name(version))
    try:
        shutil.copytree(model_dir, tmp)
        os.makedirs(os.path.join(tmp, "assets.extra"), exist_ok=True)
        record = os.path.join(tmp, PUSH_RECORD)
        while True:
            with open(record, "w", encoding="utf-8") as f:
                json.dump({"digest": digest, "version": version, **source}, f, indent=1)
            _fsync_tree(tmp)
            final = os.path.join(serving_dir, str(version))
            try:
                os.rename(tmp, final)
                break
            except OSError as err:
                # Another root's push took this number meanwhile: take the next one.
                if err.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                    raise
                version = max(version, *versions(serving_dir)) + 1
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        raise PushError(f"serving dir {serving_dir}: push failed ({err.strerror or err}); "
                        "nothing was pushed. Free space or fix permissions and re-run") from None
    return {"pushed": True, "version": version, "digest": digest, "path": final}


def _fsync_tree(path: str) -> None:
    """Flushes the copy so a crash after the rename cannot expose empty files."""
    for root, _, files in os.walk(path):
        for name in files:
            fd = os.open(os.path.join(root, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


class Executor(base_executor.BaseExecutor):

    def Do(self, input_dict, output_dict, exec_properties):
        model = artifact_utils.get_single_instance(input_dict[names.MODEL])
        blessing = artifact_utils.get_single_instance(input_dict[MODEL_BLESSING])
        infra = input_dict.get(names.INFRA_BLESSING)  # absent: no infra validation wired
        pushed = artifact_utils.get_single_instance(output_dict[names.PUSHED_MODEL])
        serving_dir = exec_properties["serving_dir"]
        refused = refusal(blessing, artifact_utils.get_single_instance(infra) if infra else None)
        if refused:
            logger.info("model %s not pushed: %s", model.uri, refused)
            pushed.set_int_custom_property(names.PUSHED, 0)
            pushed.set_string_custom_property(names.NOT_PUSHED_BECAUSE, refused)
            return
        result = push(path_utils.serving_model_path(model.uri), serving_dir,
                      {"model_uri": model.uri, "model_id": model.id})
        pushed.set_int_custom_property(names.PUSHED, int(result["pushed"]))
        pushed.set_string_custom_property(names.PUSHED_DESTINATION, result["path"])
        pushed.set_string_custom_property(names.PUSHED_VERSION, str(result["version"]))
        pushed.set_string_custom_property("digest", result["digest"])
        if result["pushed"]:
            logger.info("pushed %s as version %d", model.uri, result["version"])
        else:
            logger.info("model already served as version %d: nothing new pushed",
                        result["version"])


def refusal(blessing, infra_blessing) -> str:
    """Why a model must not be pushed ("" when it may): the Evaluator did not bless it, or
    it failed infra validation (the InfraValidator's reason)."""
    if not blessing.get_int_custom_property(names.BLESSED):
        return "the Evaluator did not bless it"
    if infra_blessing is not None and not infra_blessing.get_int_custom_property(names.BLESSED):
        reason = infra_blessing.get_string_custom_property(names.REASON)
        return f"infra validation failed: {reason or 'see the InfraValidator output'}"
    return ""


class PusherSpec(types.ComponentSpec):
    PARAMETERS = {"serving_dir": ExecutionParameter(type=str)}
    INPUTS = {
        names.MODEL: ChannelParameter(type=standard_artifacts.Model),
        MODEL_BLESSING: ChannelParameter(type=standard_artifacts.ModelBlessing),
        names.INFRA_BLESSING: ChannelParameter(type=standard_artifacts.InfraBlessing,
                                               optional=True),
    }
    OUTPUTS = {names.PUSHED_MODEL: ChannelParameter(type=standard_artifacts.PushedModel)}


class Pusher(base_component.BaseComponent):
    """Pushes blessed (and, given an infra_blessing, infra-validated) models to
    `serving_dir` in TF Serving's <version>/ layout."""

    SPEC_CLASS = PusherSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(Executor)

    def __init__(self, model: types.BaseChannel, model_blessing: types.BaseChannel,
                 serving_dir: str, infra_blessing: Optional[types.BaseChannel] = None):
        super().__init__(spec=PusherSpec(
            model=model, model_blessing=model_blessing, infra_blessing=infra_blessing,
            serving_dir=serving_dir,
            pushed_model=types.Channel(type=standard_artifacts.PushedModel)))
