"""The exported SavedModel is one the stock TF Serving 2.16 binary can load: saved_model_cli
reads it, and it uses no op outside TensorFlow itself (no custom op libraries)."""
import ast
import os
import re
import subprocess
import sys

from serving import protos


def graph_ops(model_dir):
    """Every op in the serving MetaGraph, its function library included."""
    saved_model = protos.saved_model_pb2.SavedModel()
    with open(os.path.join(model_dir, "saved_model.pb"), "rb") as f:
        saved_model.ParseFromString(f.read())
    [meta_graph] = [m for m in saved_model.meta_graphs if "serve" in m.meta_info_def.tags]
    graph = meta_graph.graph_def
    functions = {f.signature.name for f in graph.library.function}
    ops = {node.op for node in graph.node}
    ops |= {node.op for function in graph.library.function for node in function.node_def}
    return ops - functions  # a node may call a library function by its name


def test_saved_model_cli_loads_it_and_every_op_is_stock_tensorflow(tiny_model_dir):
    import tensorflow as tf
    from tensorflow.python.framework import op_def_registry

    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    result = subprocess.run([cli, "show", "--all", "--dir", tiny_model_dir], capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    for name in ("serving_default", "generate", "score"):
        assert f"signature_def['{name}']" in result.stdout
    assert "Concrete Functions:" in result.stdout  # it loaded the model, not just the proto
    listed = ast.literal_eval(re.search(r"contains the following ops: (\{.*\})",
                                        result.stdout).group(1))

    ops = graph_ops(tiny_model_dir)
    assert listed <= ops and "StatelessWhile" in ops
    assert [op for op in sorted(ops) if op_def_registry.get(op) is None] == []
    # tf.raw_ops lists the ops built into TensorFlow; ops of custom libraries (tf-text,
    # tf.load_op_library) get registered when loaded but never appear there.
    assert [op for op in sorted(ops) if not hasattr(tf.raw_ops, op)] == []
