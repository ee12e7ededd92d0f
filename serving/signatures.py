"""SignatureDefs as TF Serving reads them, and checking a request's inputs against one.

TensorFlow-free: the server, the in-process client and the remote clients share it.
Messages follow TF Serving's wording where it has one and always name the input.
"""
import os
from typing import Dict, Iterable, List, Mapping, Tuple

import numpy as np
from google.protobuf.message import DecodeError

from models import features
from models.settings import SAMPLING_RULES
from serving import protos
from serving.errors import ServingError, invalid_argument
from serving.settings import DEFAULT_LIMITS, Limits

SERVE_TAG = "serve"
DEFAULT_SIGNATURE = "serving_default"  # TF Serving's default key, and our one-step signature
STATES_INPUT = "states"

# Sampling parameters of the generation signatures: one value per row, or a single value
# (a scalar, or one row) that applies to every row of the request.
PER_ROW_PARAMETERS = ("num_chars", "temperature", "top_k", "top_p", "seed")

# The signature TF 2 writes for table initialisation: listed in metadata, never callable.
INIT_OP_SIGNATURE = "__saved_model_init_op"


def read_signature_defs(model_path: str) -> Dict[str, "protos.meta_graph_pb2.SignatureDef"]:
    """The SignatureDefs of the MetaGraph tagged `serve` (the one TF Serving loads)."""
    path = os.path.join(model_path, "saved_model.pb")
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as err:
        raise ServingError("NOT_FOUND", f"{path}: cannot read it ({err.strerror}); a model "
                           "version directory must hold a SavedModel: re-push the version or "
                           "remove the directory") from None
    saved_model = protos.saved_model_pb2.SavedModel()
    try:
        saved_model.ParseFromString(data)
    except DecodeError as err:
        raise ServingError("DATA_LOSS", f"{path}: not a SavedModel ({err}); re-export or "
                           "re-push this version") from None
    if not saved_model.meta_graphs:  # an empty file parses as an empty SavedModel
        raise ServingError("DATA_LOSS", f"{path}: holds no MetaGraph ({len(data)} bytes; "
                           "empty or truncated); re-export or re-push this version")
    tags_seen = []
    for meta_graph in saved_model.meta_graphs:
        tags = list(meta_graph.meta_info_def.tags)
        if SERVE_TAG in tags:
            return dict(meta_graph.signature_def)
        tags_seen.append(tags)
    raise ServingError("NOT_FOUND", f"{path}: no MetaGraph tagged '{SERVE_TAG}' "
                       f"(tag sets found: {tags_seen})")


def find(signature_defs: Mapping, name: str) -> Tuple[str, "protos.meta_graph_pb2.SignatureDef"]:
    """(resolved name, SignatureDef); an empty name means serving_default, as in TF Serving."""
    name = name or DEFAULT_SIGNATURE
    if name not in signature_defs or name == INIT_OP_SIGNATURE:
        raise ServingError("FAILED_PRECONDITION", f'Serving signature key "{name}" not found.')
    return name, signature_defs[name]


def state_size(signature_defs: Mapping) -> int:
    """Width of the one-step signature's `states` input, as its SignatureDef declares it."""
    signature = signature_defs.get(DEFAULT_SIGNATURE)
    info = signature.inputs.get(STATES_INPUT) if signature is not None else None
    dims = [d.size for d in info.tensor_shape.dim] if info is not None else []
    if len(dims) != 2 or dims[1] <= 0:
        raise ServingError("FAILED_PRECONDITION", f"the model has no '{DEFAULT_SIGNATURE}' "
                           f"signature with a float32 [batch, state_size] '{STATES_INPUT}' input; "
                           "is it a textgen model?")
    return dims[1]


def output_names(signature_def, output_filter: Iterable[str]) -> List[str]:
    """The outputs a request asks for (all when the filter is empty), in TF Serving's way."""
    wanted, seen = [], set()
    for alias in output_filter:
        if alias not in signature_def.outputs:
            raise invalid_argument(
                f"output tensor alias not found in signature: {alias} Outputs expected to be "
                f"in the set {{{','.join(sorted(signature_def.outputs))}}}.")
        if alias in seen:
            raise invalid_argument(f"duplicate output tensor alias: {alias}")
        seen.add(alias)
        wanted.append(alias)
    return wanted or sorted(signature_def.outputs)


def prepare_inputs(signature_name: str, signature_def, inputs: Mapping[str, np.ndarray],
                   limits: Limits = DEFAULT_LIMITS) -> Dict[str, np.ndarray]:
    """Checks a request against the SignatureDef and fills omitted inputs from its defaults.

    Raises ServingError(INVALID_ARGUMENT) naming the input for: unknown or missing inputs,
    a wrong dtype or shape, batch sizes that disagree, and values the textgen signatures
    would reject (checked here so that the message names the field, not a graph node).
    """
    declared = signature_def.inputs
    for alias in inputs:
        if alias not in declared:
            raise invalid_argument(
                f"input tensor alias not found in signature: {alias}. Inputs expected to be in "
                f"the set {{{','.join(sorted(declared))}}}.")
    missing = sorted(a for a in declared if a not in inputs and a not in signature_def.defaults)
    if missing:
        required = sorted(a for a in declared if a not in signature_def.defaults)
        raise invalid_argument(
            f"missing input {', '.join(missing)}: signature '{signature_name}' needs "
            f"{{{','.join(required)}}}; only {{{','.join(sorted(signature_def.defaults))}}} "
            "may be left out (they have defaults)")
    feeds = {}
    for alias in sorted(declared):
        value = inputs[alias] if alias in inputs else \
            protos.make_ndarray(signature_def.defaults[alias])
        value = np.asarray(value)
        if alias in PER_ROW_PARAMETERS and value.ndim == 0 and _is_rows(declared[alias]):
            value = value.reshape([1])  # a scalar is one value for every row
        feeds[alias] = _check_tensor(alias, value, declared[alias])
    _check_batch(feeds, declared)
    for alias, array in feeds.items():
        kinds, check = _VALUE_CHECKS.get(alias, ("", None))
        # `resume` reads a prompt from a state: a row may have none (it goes on from there).
        if alias == "prompts" and signature_name == features.RESUME_SIGNATURE:
            continue
        if array.dtype.kind in kinds:
            check(alias, array, limits)
    _check_batch_chars(feeds, limits)
    return feeds


def _check_tensor(alias: str, array: np.ndarray, info) -> np.ndarray:
    expected = info.dtype
    try:
        got = protos.dtype_of(array)
    except ValueError:
        got = None
    if got != expected:
        got_name = protos.dtype_name(got) if got is not None else str(array.dtype)
        raise invalid_argument(f"input '{alias}' has type {got_name} but the signature expects "
                               f"{protos.dtype_name(expected)}")
    if not info.tensor_shape.unknown_rank:
        dims = [d.size for d in info.tensor_shape.dim]
        fits = len(dims) == array.ndim and all(
            d < 0 or d == size for d, size in zip(dims, array.shape, strict=True))
        if not fits:
            raise invalid_argument(
                f"input '{alias}' has shape {_shape_text(array.shape)} but the signature "
                f"expects {_shape_text(dims)} (-1: any size)")
    return array


def batch_rows(signature_def, feeds: Mapping[str, np.ndarray]):
    """The rows of a request whose every input is batch-major (declared [-1, ...]), as a
    batching server needs; None if some input is not."""
    declared = signature_def.inputs
    if not declared or not all(_is_rows(declared[alias]) for alias in feeds):
        return None
    return next(iter(feeds.values())).shape[0]


def _is_rows(info) -> bool:
    dims = info.tensor_shape.dim
    return not info.tensor_shape.unknown_rank and bool(dims) and dims[0].size == -1


def _check_batch(feeds: Dict[str, np.ndarray], declared) -> None:
    """Inputs declared with a leading -1 dimension are rows of one batch: sizes must agree.

    A per-row parameter given once (one row) applies to every row: it is repeated here,
    so that what runs is batch-major throughout and can be merged with other requests.
    """
    rows = {alias: array.shape[0] for alias, array in feeds.items()
            if _is_rows(declared[alias])}
    data = {alias: n for alias, n in rows.items() if alias not in PER_ROW_PARAMETERS}
    batch = max(data.values()) if data else max(rows.values(), default=1)
    for alias, size in rows.items():
        if size == batch:
            continue
        if alias in PER_ROW_PARAMETERS and size == 1:
            feeds[alias] = np.repeat(feeds[alias], batch, axis=0)
            continue
        other = next(a for a in rows if rows[a] == batch)
        raise invalid_argument(
            f"input '{alias}' has batch size {size} but '{other}' has {batch}: all batched "
            "inputs of one request need the same first dimension (a per-row parameter "
            f"such as {', '.join(PER_ROW_PARAMETERS)} may also have a single value)")


def _shape_text(shape) -> str:
    return "[" + ",".join(str(int(s)) for s in shape) + "]"


# --- values the textgen signatures would reject (by input name) -----------------------------

def _check_sampling(alias, array, limits):
    """The sampling parameter's rule (models/settings.py), which the graph checks too."""
    rule = SAMPLING_RULES[alias]
    for row, value in enumerate(array.ravel()):
        if not rule.holds(value):
            raise invalid_argument(f"{alias} is {value} in row {row}: it must be {rule.text}")


def _check_num_chars(alias, array, limits):
    _check_sampling(alias, array, limits)
    for row, value in enumerate(array.ravel()):
        if value > limits.max_num_chars:
            raise invalid_argument(
                f"{alias} is {value} in row {row}: it must be at most {limits.max_num_chars} "
                "(this server's limit; `textgen serve --max-num-chars` sets it)")


def _check_text(alias, array, limits):
    for row, value in enumerate(array.ravel()):
        if len(value) == 0:
            raise invalid_argument(f"{alias} row {row} is empty: every row needs at least "
                                   "one character")


def _check_examples(alias, array, limits):
    """What the score signature parses: a serialized tf.Example with one text value per row
    (refused here, naming the row, rather than failing in the graph)."""
    for row, value in enumerate(array.ravel()):
        example = protos.example_pb2.Example()
        try:
            example.ParseFromString(bytes(value))
        except DecodeError as err:
            raise invalid_argument(f"{alias} row {row} is not a serialized tf.Example ({err})"
                                   ) from None
        found = example.features.feature
        if features.TEXT_KEY not in found or len(found[features.TEXT_KEY].bytes_list.value) != 1:
            raise invalid_argument(
                f"{alias} row {row} has no '{features.TEXT_KEY}' feature holding one bytes "
                "value: each example is one text record, as the pipeline's examples are")


def _check_batch_chars(feeds: Mapping[str, np.ndarray], limits: Limits) -> None:
    """Bounds the model steps of one request: each row steps through its prompt, then
    generates num_chars (one step per character for the one-step signature's `chars`)."""
    for alias in _TEXT_INPUTS:
        texts = feeds.get(alias)
        if texts is None or texts.dtype.kind not in "OSU":
            continue
        num_chars = int(feeds["num_chars"].max(initial=0)) if "num_chars" in feeds else 0
        longest = max((_char_count(t) for t in texts.ravel()), default=0)
        total = texts.size * (longest + num_chars)
        if total > limits.max_batch_chars:
            raise invalid_argument(
                f"{alias} has {texts.size} rows × ({longest} characters in the longest row + "
                f"num_chars {num_chars}) = {total} characters to run, more than this server's "
                f"limit of {limits.max_batch_chars} (`textgen serve --max-batch-chars` sets "
                "it); send fewer rows, shorter prompts or a smaller num_chars")


def _char_count(value) -> int:
    """Characters as the graph splits them: UTF-8, a bad byte counting as one."""
    if isinstance(value, str):
        return len(value)
    return len(bytes(value).decode("utf-8", "replace"))


# input name → (numpy dtype kinds the check applies to, check)
_VALUE_CHECKS = {
    "num_chars": ("iu", _check_num_chars),
    "temperature": ("f", _check_sampling),
    "top_k": ("iu", _check_sampling),
    "top_p": ("f", _check_sampling),
    "chars": ("O", _check_text),
    "prompts": ("O", _check_text),
    "examples": ("O", _check_examples),
}
_TEXT_INPUTS = ("prompts", "chars")
