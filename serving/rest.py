"""TF Serving's REST JSON for tensors: decoding requests, encoding responses.

The rules are those of TF Serving's json_tensor.cc: a request carries either
`instances` (rows: a list with one object of named inputs per row, or plain values when
the signature has a single input) or `inputs` (columns: an object of named tensors, or
one tensor); the response mirrors it as `predictions` or `outputs`. Strings are JSON
strings or {"b64": ...} objects; outputs whose name ends in `_bytes` are always base64.
One addition: inputs with a SignatureDef default may be left out, as in gRPC Predict.
"""
import base64
import binascii
import json
import math
from typing import Callable, Dict, Mapping, Tuple

import numpy as np

from serving import protos
from serving.errors import ServingError, invalid_argument

_FLOAT_TYPES = (protos.types_pb2.DT_FLOAT, protos.types_pb2.DT_DOUBLE, protos.types_pb2.DT_HALF)
_BYTES_SUFFIX = "_bytes"


def _json_text(value) -> str:
    text = json.dumps(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _json_type(value) -> str:
    if value is None:
        return "Null"
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, (int, float)):
        return "Number"
    return {str: "String", list: "Array", dict: "Object"}.get(type(value), type(value).__name__)


def _is_b64(value) -> bool:
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get("b64"), str)


def _leaf(value, dtype: int):
    """One JSON scalar → a numpy-ready value of `dtype`; ValueError in TF Serving's words."""
    type_error = ValueError(f"JSON Value: {_json_text(value)} Type: {_json_type(value)} is not "
                            f"of expected type: {protos.dtype_name(dtype)}")
    if dtype == protos.types_pb2.DT_STRING:
        if isinstance(value, str):
            return value.encode("utf-8")
        if _is_b64(value):
            try:
                return base64.b64decode(value["b64"], validate=True)
            except binascii.Error:
                raise ValueError(f"JSON Value: {_json_text(value)} not formatted correctly "
                                 "for base64 data") from None
        raise type_error
    if isinstance(value, bool):
        if dtype == protos.types_pb2.DT_BOOL:
            return value
        raise type_error
    if dtype in _FLOAT_TYPES and isinstance(value, (int, float)):
        limit = float(np.finfo(protos.numpy_type(dtype)).max)
        # An int is compared as it is: math.isfinite(10**400) raises OverflowError.
        if (isinstance(value, int) or math.isfinite(value)) and abs(value) > limit:
            raise ValueError(f"Cannot convert JSON value: {_json_text(value)} to "
                             f"{protos.dtype_name(dtype)} without loss of precision.")
        return value
    if isinstance(value, int) and dtype not in _FLOAT_TYPES and dtype != protos.types_pb2.DT_BOOL:
        info = np.iinfo(protos.numpy_type(dtype))
        if info.min <= value <= info.max:
            return value
    raise type_error


def json_to_array(value, dtype: int) -> np.ndarray:
    """A JSON scalar or (nested, rectangular) list → numpy array of the DataType."""
    np_type = protos.numpy_type(dtype)
    shape = []
    probe = value
    while isinstance(probe, list):
        shape.append(len(probe))
        if len(shape) > protos.MAX_RANK:
            raise ValueError(f"lists nested more than {protos.MAX_RANK} deep; a tensor has at "
                             f"most {protos.MAX_RANK} dimensions")
        probe = probe[0] if probe else None
    flat = []

    def walk(item, level):
        if level == len(shape):
            if isinstance(item, list):
                raise ValueError(f"Encountered list at unexpected level: {level} expected < "
                                 f"{len(shape)}")
            flat.append(_leaf(item, dtype))
            return
        if not isinstance(item, list):
            raise ValueError(f"JSON Value: {_json_text(item)} found at incorrect level: "
                             f"{level + 1} in the JSON DOM. Expected at level: {len(shape)}")
        if len(item) != shape[level]:
            raise ValueError(f"Encountered list at unexpected size: {len(item)} at level: "
                             f"{level} expected size: {shape[level]}")
        for element in item:
            walk(element, level + 1)

    walk(value, 0)
    array = np.empty(len(flat), dtype=object) if np_type is object else None
    if array is not None:
        array[:] = flat
    else:
        array = np.array(flat, dtype=np_type)
    return array.reshape(shape)


def array_to_json(array: np.ndarray, name: str):
    """numpy array → JSON value; float32 values in their shortest exact form, as TF Serving."""
    array = np.asarray(array)
    if array.dtype == object or array.dtype.kind in "SU":
        as_bytes = name.endswith(_BYTES_SUFFIX)

        def convert(value):
            value = value.encode("utf-8") if isinstance(value, str) else bytes(value)
            if not as_bytes:
                try:
                    return value.decode("utf-8")
                except UnicodeDecodeError:
                    pass  # not text: base64 keeps it intact (TF Serving would emit bad JSON)
            return {"b64": base64.b64encode(value).decode("ascii")}
    elif array.dtype.kind == "f":
        # str() of a numpy float is the shortest text that reads back to the same value.
        def convert(value):
            return float(str(value))
    elif array.dtype.kind == "b":
        convert = bool
    else:
        convert = int
    values = np.empty(array.size, dtype=object)
    values[:] = [convert(v) for v in array.ravel()]
    return values.reshape(array.shape).tolist()


# --- requests -------------------------------------------------------------------------

def decode_predict_request(body: bytes, signature_inputs: Callable[[str], Mapping]
                           ) -> Tuple[str, Dict[str, np.ndarray], bool]:
    """A :predict body → (signature name, {input: array}, True for the `instances` format).

    `signature_inputs(name)` returns the signature's input TensorInfos (and raises if the
    signature does not exist).
    """
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as err:
        raise invalid_argument(f"JSON Parse error: {err}") from None
    except RecursionError:  # Python's parser recurses once per nested array or object
        raise invalid_argument("JSON Parse error: arrays or objects nested too deeply (a "
                               f"tensor has at most {protos.MAX_RANK} dimensions)") from None
    if not isinstance(doc, dict):
        raise invalid_argument(f"JSON Value: {_json_text(doc)} Is not object")
    signature_name = doc.get("signature_name", "")
    if not isinstance(signature_name, str):
        raise invalid_argument(f"JSON Value: {_json_text(signature_name)} not formatted "
                               "correctly. 'signature_name' key must be a string value.")
    declared = signature_inputs(signature_name)
    if "instances" in doc and "inputs" in doc:
        raise invalid_argument("Not formatted correctly expecting only one of 'inputs' or "
                               "'instances' keys to exist")
    if "instances" in doc:
        return signature_name, _decode_instances(doc["instances"], declared), True
    if "inputs" in doc:
        return signature_name, _decode_inputs(doc["inputs"], declared), False
    raise invalid_argument("Missing 'inputs' or 'instances' key")


def _decode_instances(instances, declared) -> Dict[str, np.ndarray]:
    if not isinstance(instances, list):
        raise invalid_argument("Excepting 'instances' to be an list/array")
    if not instances:
        raise invalid_argument("No values in 'instances' array")
    named = isinstance(instances[0], dict) and not _is_b64(instances[0])
    if not named and len(declared) > 1:
        raise invalid_argument(
            f"instances is a plain list, but expecting list of objects as multiple input "
            f"tensors required as per tensorinfo_map ({{{','.join(sorted(declared))}}})")
    rows: Dict[str, list] = {}
    for index, instance in enumerate(instances):
        if named != (isinstance(instance, dict) and not _is_b64(instance)):
            raise invalid_argument(f"Expecting {'object' if named else 'value/list'} but got "
                                   f"{_json_type(instance)} at item {index} of input list")
        items = instance.items() if named else [(next(iter(declared)), instance)]
        if named and index and set(instance) != set(instances[0]):
            raise invalid_argument(
                f"Failed to process element: {index} of 'instances' list. JSON object keys "
                f"{{{','.join(sorted(instance))}}} must be equal to element 0's: "
                f"{{{','.join(sorted(instances[0]))}}}")
        for alias, value in items:
            if alias not in declared:
                raise invalid_argument(f"JSON object: does not have named input: {alias}")
            try:
                row = json_to_array(value, declared[alias].dtype)
            except ValueError as err:
                raise invalid_argument(f"Failed to process element: {index} key: {alias} of "
                                       f"'instances' list. Error: {err}") from None
            if rows.get(alias) and rows[alias][0].shape != row.shape:
                raise invalid_argument(
                    f"Failed to process element: {index} key: {alias} of 'instances' list. "
                    f"Error: Expecting shape {list(rows[alias][0].shape)} but got: "
                    f"{list(row.shape)}")
            rows.setdefault(alias, []).append(row)
    return {alias: np.stack(values) for alias, values in rows.items()}


def _decode_inputs(inputs, declared) -> Dict[str, np.ndarray]:
    if not isinstance(inputs, dict) or _is_b64(inputs):
        if len(declared) > 1:
            raise invalid_argument(
                "inputs is a plain value/list, but expecting an object as multiple input "
                f"tensors required as per tensorinfo_map ({{{','.join(sorted(declared))}}})")
        inputs = {next(iter(declared)): inputs}
    decoded = {}
    for alias, value in inputs.items():
        if alias not in declared:
            raise invalid_argument(
                f"input tensor alias not found in signature: {alias}. Inputs expected to be in "
                f"the set {{{','.join(sorted(declared))}}}.")
        try:
            decoded[alias] = json_to_array(value, declared[alias].dtype)
        except ValueError as err:
            raise invalid_argument(f"Failed to process input: {alias} of 'inputs'. "
                                   f"Error: {err}") from None
    return decoded


# --- responses ------------------------------------------------------------------------

def encode_predict_response(outputs: Mapping[str, np.ndarray], rows: bool) -> dict:
    """{"predictions": [...]} for the `instances` format, {"outputs": ...} for `inputs`."""
    names = sorted(outputs)
    if not rows:
        if len(names) == 1:
            return {"outputs": array_to_json(outputs[names[0]], names[0])}
        return {"outputs": {name: array_to_json(outputs[name], name) for name in names}}
    batch = None
    for name in names:
        shape = np.shape(outputs[name])
        if not shape:
            raise invalid_argument(f"Tensor name: {name} has no shape information ")
        if batch is not None and shape[0] != batch:
            raise invalid_argument(f"Tensor name: {name} has inconsistent batch size: "
                                   f"{shape[0]} expecting: {batch}")
        batch = shape[0]
    columns = {name: array_to_json(outputs[name], name) for name in names}
    if len(names) == 1:
        return {"predictions": columns[names[0]]}
    return {"predictions": [{name: columns[name][i] for name in names} for i in range(batch)]}


def decode_predict_response(doc: Mapping, declared_outputs: Mapping) -> Dict[str, np.ndarray]:
    """A client's view of an `inputs`-format response: {output: array} by declared dtype."""
    if "outputs" not in doc:
        raise ServingError("INTERNAL", f"the response has no 'outputs': {_json_text(doc)}")
    outputs = doc["outputs"]
    if not (isinstance(outputs, dict) and set(outputs) <= set(declared_outputs)):
        if len(declared_outputs) != 1:
            raise ServingError("INTERNAL", "the response's 'outputs' is not an object of the "
                               f"signature's outputs: {_json_text(outputs)}")
        outputs = {next(iter(declared_outputs)): outputs}
    try:
        return {name: json_to_array(value, declared_outputs[name].dtype)
                for name, value in outputs.items()}
    except ValueError as err:
        raise ServingError("INTERNAL", f"cannot read the response: {err}") from None
