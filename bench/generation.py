"""Generating 1,000 characters at batch 1, 5 and 64, four ways, same weights:

  (a) tutorial  the tutorial's way: a Python loop calling the one-step signature
  (b) generate  the `generate` signature in process (the loop inside the graph)
  (c) grpc      `generate` through the local TF-Serving-compatible server over gRPC
  (d) floor     a bare tf.while_loop of GRU-cell steps with argmax, no string ops

Speed does not depend on the weights' values: an untrained model of the tutorial's size.
"""
import argparse
import os
import shutil
import tempfile

import numpy as np
import tensorflow as tf

from bench import common
from models import export, features, model as char_model
from models.settings import ModelSettings

NUM_CHARS = 1000
PROMPT = "ROMEO:"


def build(vocab, rnn_units, embedding_dim=256):
    keras_model = char_model.build_model(len(vocab) + features.NUM_RESERVED_IDS, ModelSettings(
        embedding_dim=embedding_dim, rnn_units=rnn_units, cell="gru", dropout=0.0))
    export_dir = tempfile.mkdtemp(prefix="bench-gen-")
    export.save(keras_model, vocab, "stream", os.path.join(export_dir, "1"))
    return keras_model, export_dir


def floor_fn(keras_model):
    embedding = keras_model.get_layer("embedding")
    cell = char_model.rnn_layers_of(keras_model)[0].cell
    dense = keras_model.get_layer("logits")

    @tf.function
    def floor(ids, state):
        def body(i, ids, state):
            out, new = cell(embedding(ids), state, training=False)
            return i + 1, tf.argmax(dense(out), axis=-1), new[0] if isinstance(new, list) else new
        return tf.while_loop(lambda i, *_: i < NUM_CHARS, body, (tf.constant(0), ids, state))[1]
    return floor


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rnn-units", type=int, default=1024)
    parser.add_argument("--batches", default="1,5,64")
    parser.add_argument("--repetitions", type=int, default=5)
    args = parser.parse_args(argv)

    from serving.client import connect
    from serving.server import Server

    with open(common.SHAKESPEARE, encoding="utf-8") as f:
        vocab = sorted(set(f.read()))
    keras_model, export_dir = build(vocab, args.rnn_units)
    loaded = tf.saved_model.load(os.path.join(export_dir, "1"))
    one_step, generate = loaded.signatures["serving_default"], loaded.signatures["generate"]
    state_size = args.rnn_units
    floor = floor_fn(keras_model)
    results = {"num_chars": NUM_CHARS, "rnn_units": args.rnn_units, "batches": {}}
    try:
        with Server(export_dir, port=0, rest_port=None, poll_seconds=0) as server, \
                connect(server=server.grpc_target) as client:
            for batch in [int(b) for b in args.batches.split(",")]:
                prompts = [PROMPT] * batch
                temperature = tf.fill([batch], 1.0)

                def tutorial():
                    chars, states = tf.constant(prompts), tf.zeros([batch, state_size])
                    for step in range(NUM_CHARS):
                        out = one_step(chars=chars, states=states, temperature=temperature,
                                       seed=tf.fill([batch], step + 1))
                        chars, states = out["next_chars"], out["states"]

                def in_graph():
                    generate(prompts=tf.constant(prompts), num_chars=tf.fill([batch], NUM_CHARS),
                             temperature=temperature, top_k=tf.fill([batch], 0),
                             top_p=tf.fill([batch], 1.0),
                             seed=tf.range(1, batch + 1))["text"].numpy()

                def grpc():
                    client.generate(prompts, NUM_CHARS, temperature=1.0, seed=1)

                ids = tf.fill([batch], tf.constant(2, tf.int64))
                zero = tf.zeros([batch, state_size])

                def bare():
                    floor(ids, zero).numpy()

                contenders = {"tutorial": tutorial, "generate": in_graph, "grpc": grpc,
                              "floor": bare}
                for run in contenders.values():  # warm-up: tracing, first loads
                    run()
                times = common.alternate({n: (lambda r=r: common.timed(r))
                                          for n, r in contenders.items()}, args.repetitions)
                floor_median = np.median(times["floor"])
                results["batches"][str(batch)] = {
                    name: {**common.summary(t),
                           "chars_per_s": batch * NUM_CHARS / float(np.median(t)),
                           "x_floor": float(np.median(t)) / floor_median}
                    for name, t in times.items()}
                results["batches"][str(batch)]["grpc_vs_generate"] = float(
                    np.median(times["grpc"]) / np.median(times["generate"]))
                # Within one repetition the two ran back to back: the ratio least
                # disturbed by the machine's drift.
                results["batches"][str(batch)]["grpc_vs_generate_paired"] = float(np.median(
                    [g / i for g, i in zip(times["grpc"], times["generate"])]))
                results["batches"][str(batch)]["generate_vs_floor_paired"] = float(np.median(
                    [g / f for g, f in zip(times["generate"], times["floor"])]))
                print(batch, {n: round(v["chars_per_s"]) for n, v in
                              results["batches"][str(batch)].items() if isinstance(v, dict)})
    finally:
        shutil.rmtree(export_dir, ignore_errors=True)
    results["machine"] = common.machine()
    common.save_result("generation", results)
    return results


if __name__ == "__main__":
    main()
