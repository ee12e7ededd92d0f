"""TF Serving's API protos without TensorFlow's import cost, and numpy ↔ TensorProto.

The modules of tensorflow-serving-api import `tensorflow.core.*_pb2`, and importing any
`tensorflow.*` module runs `tensorflow/__init__.py` first, which loads all of TensorFlow
(about 20 s here) although the *_pb2 modules need only protobuf. A gRPC or REST client
should start at once, so when TensorFlow is not imported yet the protos are imported
under a bare stand-in `tensorflow` package, and the stand-in and every module imported
under it are removed again afterwards: a later real `import tensorflow` starts from a
clean slate, re-registers the same descriptors (protobuf accepts identical files) and
yields the very same message classes. tests/test_serving_client.py checks that a client
starts without TensorFlow.
"""
import importlib
import importlib.util
import math
import sys
import types
from typing import Optional

import numpy as np


def _import_without_tensorflow_init(names):
    if "tensorflow" in sys.modules:
        return [importlib.import_module(name) for name in names]
    spec = importlib.util.find_spec("tensorflow")
    if spec is None or not spec.submodule_search_locations:
        return [importlib.import_module(name) for name in names]
    stand_in = types.ModuleType("tensorflow")
    stand_in.__path__ = list(spec.submodule_search_locations)
    before = set(sys.modules)
    sys.modules["tensorflow"] = stand_in
    try:
        return [importlib.import_module(name) for name in names]
    finally:
        for name in set(sys.modules) - before:
            if name == "tensorflow" or name.startswith("tensorflow."):
                del sys.modules[name]


(types_pb2, tensor_pb2, meta_graph_pb2, saved_model_pb2, example_pb2, model_pb2, predict_pb2,
 prediction_log_pb2, get_model_metadata_pb2, get_model_status_pb2, prediction_service_pb2_grpc,
 model_service_pb2_grpc) = _import_without_tensorflow_init([
     "tensorflow.core.framework.types_pb2",
     "tensorflow.core.framework.tensor_pb2",
     "tensorflow.core.protobuf.meta_graph_pb2",
     "tensorflow.core.protobuf.saved_model_pb2",
     "tensorflow.core.example.example_pb2",
     "tensorflow_serving.apis.model_pb2",
     "tensorflow_serving.apis.predict_pb2",
     "tensorflow_serving.apis.prediction_log_pb2",
     "tensorflow_serving.apis.get_model_metadata_pb2",
     "tensorflow_serving.apis.get_model_status_pb2",
     "tensorflow_serving.apis.prediction_service_pb2_grpc",
     "tensorflow_serving.apis.model_service_pb2_grpc",
 ])

# DataType → (numpy type, TensorProto field holding typed values, name used in messages).
_TYPES = {
    types_pb2.DT_FLOAT: (np.float32, "float_val", "float32"),
    types_pb2.DT_DOUBLE: (np.float64, "double_val", "float64"),
    types_pb2.DT_HALF: (np.float16, "half_val", "float16"),
    types_pb2.DT_INT8: (np.int8, "int_val", "int8"),
    types_pb2.DT_INT16: (np.int16, "int_val", "int16"),
    types_pb2.DT_INT32: (np.int32, "int_val", "int32"),
    types_pb2.DT_INT64: (np.int64, "int64_val", "int64"),
    types_pb2.DT_UINT8: (np.uint8, "int_val", "uint8"),
    types_pb2.DT_UINT16: (np.uint16, "int_val", "uint16"),
    types_pb2.DT_UINT32: (np.uint32, "uint32_val", "uint32"),
    types_pb2.DT_UINT64: (np.uint64, "uint64_val", "uint64"),
    types_pb2.DT_BOOL: (np.bool_, "bool_val", "bool"),
    types_pb2.DT_STRING: (object, "string_val", "string"),
}
_FROM_NUMPY = {np.dtype(np_type): dtype for dtype, (np_type, _, _) in _TYPES.items()
               if np_type is not object}


def dtype_name(dtype: int) -> str:
    """float32, string, ... (TensorFlow's names), or DT_* for types numpy cannot hold."""
    if dtype in _TYPES:
        return _TYPES[dtype][2]
    return types_pb2.DataType.Name(dtype) if dtype in types_pb2.DataType.values() else str(dtype)


def numpy_type(dtype: int):
    """The numpy type holding `dtype` (object for strings); ValueError if there is none."""
    if dtype not in _TYPES:
        raise ValueError(f"tensors of type {dtype_name(dtype)} are not supported")
    return _TYPES[dtype][0]


def dtype_of(array: np.ndarray) -> int:
    """The DataType of a numpy array; bytes, str and object arrays are DT_STRING."""
    if array.dtype == object or array.dtype.kind in "SU":
        return types_pb2.DT_STRING
    if array.dtype not in _FROM_NUMPY:
        raise ValueError(f"numpy arrays of {array.dtype} have no TensorFlow type")
    return _FROM_NUMPY[array.dtype]


# numpy's largest rank (TensorFlow allows 254, but no textgen input has more than 2).
MAX_RANK = 32


def make_ndarray(proto, max_bytes: Optional[int] = None) -> np.ndarray:
    """TensorProto → numpy array, with TensorFlow's Tensor::FromProto rules.

    Typed value fields may hold fewer values than the shape has elements: the last value
    fills the rest (none at all means zeros). That lets a few bytes describe a tensor of
    any size, so `max_bytes` bounds the memory the array may take. Raises ValueError for
    a malformed proto or one above the bound.
    """
    np_type, field, _ = _TYPES.get(proto.dtype, (None, None, None))
    if np_type is None:
        raise ValueError(f"tensors of type {dtype_name(proto.dtype)} are not supported")
    if proto.tensor_shape.unknown_rank:
        raise ValueError("the tensor has no shape (unknown rank)")
    shape = [dim.size for dim in proto.tensor_shape.dim]
    if len(shape) > MAX_RANK:
        raise ValueError(f"the tensor has {len(shape)} dimensions; at most {MAX_RANK} are "
                         "supported")
    if any(size < 0 for size in shape):
        raise ValueError(f"the tensor's shape {shape} has a negative dimension")
    count = math.prod(shape)  # a Python int: np.prod would wrap around for huge shapes
    itemsize = np.dtype(np_type).itemsize
    if max_bytes is not None and count * itemsize > max_bytes:
        raise ValueError(f"the tensor's shape {shape} has {count} elements ({count * itemsize} "
                         f"bytes), more than this server accepts ({max_bytes} bytes in all)")
    if proto.tensor_content and np_type is not object:
        if len(proto.tensor_content) % itemsize:
            raise ValueError(f"tensor_content has {len(proto.tensor_content)} bytes, not a "
                             f"multiple of {itemsize} ({dtype_name(proto.dtype)})")
        flat = np.frombuffer(proto.tensor_content, dtype=np_type)
        if flat.size != count:
            raise ValueError(f"tensor_content holds {flat.size} values; shape {shape} "
                             f"needs {count}")
        return flat.reshape(shape).copy()
    values = getattr(proto, field)
    try:
        if np_type is object:
            flat = np.empty(len(values), dtype=object)
            flat[:] = list(values)
        elif proto.dtype == types_pb2.DT_HALF:
            flat = np.array(values, dtype=np.uint16).view(np.float16)
        else:
            flat = np.array(values, dtype=np_type)
    except OverflowError as err:  # an int_val out of range of int8, uint16, ...
        raise ValueError(f"{field} holds a value out of range for "
                         f"{dtype_name(proto.dtype)} ({err})") from None
    if flat.size >= count:
        flat = flat[:count]
    elif flat.size:
        flat = np.concatenate([flat, np.full(count - flat.size, flat[-1], dtype=flat.dtype)])
    else:
        flat = np.full(count, b"" if np_type is object else 0, dtype=np_type)
    return flat.reshape(shape)


def make_tensor_proto(values, dtype: int = None):
    """numpy array (or anything np.asarray takes) → TensorProto; str becomes UTF-8 bytes."""
    array = np.asarray(values)
    dtype = dtype_of(array) if dtype is None else dtype
    proto = tensor_pb2.TensorProto(dtype=dtype)
    for size in array.shape:
        proto.tensor_shape.dim.add(size=size)
    if dtype == types_pb2.DT_STRING:
        proto.string_val.extend(
            v.encode("utf-8") if isinstance(v, str) else bytes(v) for v in array.ravel())
    else:
        proto.tensor_content = np.ascontiguousarray(array, dtype=numpy_type(dtype)).tobytes()
    return proto
