"""Training throughput (characters/second), tutorial-sized model (embedding 256, GRU 1024,
batch 64, seq 100), steady state:

  ours         the Trainer's path: Transform output → models.trainer.input_fn → build_model
  tutorial     the tutorial's own: text → StringLookup → tf.data → its model → fit
  ours_xla     ours with XLA (jit_compile)
  ours_gru512  ours with a 512-unit GRU
  ours_bf16    ours under Keras' mixed_bfloat16 policy (logits and loss in float32)

plus a precision check: float32 vs mixed_bfloat16 from the same initial weights and data
order for the same steps; eval loss compared.
"""
import argparse
import dataclasses
import glob
import os
import time

import numpy as np
import tensorflow as tf
import tf_keras

from bench import common
from models import features, model as char_model, trainer
from models.settings import ModelSettings
from pipeline import metadata

BATCH, SEQ = 64, 100
# The tutorial's network (the default recipe's differs; bench.quality compares recipes).
TUTORIAL = ModelSettings(embedding_dim=256, rnn_units=1024, rnn_layers=1, cell="gru", dropout=0.0)


class _Accessor:
    """The part of TFX's DataAccessor that input_fn uses."""

    def tf_dataset_factory(self, files, options, schema):
        from tfx_bsl.public import tfxio
        return tfxio.TFExampleRecord(file_pattern=files, schema=schema).TensorFlowDataset(options)


def transform_output(pipeline_root):
    import tensorflow_transform as tft
    store = metadata.open_store(pipeline_root)
    for run in metadata.pipeline_runs(store):
        node = metadata.node_runs(store, run).get("Transform")
        if node and "transform_graph" in node.outputs:
            graph = node.outputs["transform_graph"][0].uri
            examples = node.outputs["transformed_examples"][0].uri
            return tft.TFTransformOutput(graph), examples
    raise RuntimeError(f"no Transform output under {pipeline_root}: run bench.pipeline_cost first")


def ours_dataset(tft_output, examples_uri, split="train"):
    files = glob.glob(os.path.join(examples_uri, f"Split-{split}", "*"))
    return trainer.input_fn(files, _Accessor(), tft_output.transformed_metadata.schema,
                               BATCH, shuffle=split == "train", repeat=True, seed=0)


def tutorial_dataset(text):
    """As in the tutorial: one long id stream batched into sequences of SEQ+1."""
    vocab = sorted(set(text))
    ids_from_chars = tf_keras.layers.StringLookup(vocabulary=list(vocab), mask_token=None)
    all_ids = ids_from_chars(tf.strings.unicode_split(text, "UTF-8"))
    sequences = tf.data.Dataset.from_tensor_slices(all_ids).batch(SEQ + 1, drop_remainder=True)
    dataset = sequences.map(lambda s: (s[:-1], s[1:]))
    return (dataset.shuffle(10000).batch(BATCH, drop_remainder=True).repeat()
            .prefetch(tf.data.AUTOTUNE)), len(ids_from_chars.get_vocabulary())


class TutorialModel(tf_keras.Model):
    def __init__(self, vocab_size, embedding_dim=256, rnn_units=1024):
        super().__init__(self)
        self.embedding = tf_keras.layers.Embedding(vocab_size, embedding_dim)
        self.gru = tf_keras.layers.GRU(rnn_units, return_sequences=True, return_state=True)
        self.dense = tf_keras.layers.Dense(vocab_size)

    def call(self, inputs, states=None, return_state=False, training=False):
        x = self.embedding(inputs, training=training)
        if states is None:
            states = self.gru.get_initial_state(x)
        x, states = self.gru(x, initial_state=states, training=training)
        x = self.dense(x, training=training)
        return (x, states) if return_state else x


class StepTimes(tf_keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.times, self._start = [], None

    def on_train_batch_begin(self, batch, logs=None):
        self._start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.times.append(time.perf_counter() - self._start)


def params_per_char(vocab_size, embedding_dim, units):
    """Multiply-adds per character of one forward step (GRU gates + output layer)."""
    gru = 3 * units * (embedding_dim + units) + 6 * units
    return gru + units * vocab_size


def contender(model, dataset, warmup, steps):
    iterator = iter(dataset)
    model.fit(iterator, steps_per_epoch=warmup, epochs=1, verbose=0)  # tracing, first batches

    def run():
        times = StepTimes()
        model.fit(iterator, steps_per_epoch=steps, epochs=1, verbose=0, callbacks=[times])
        return float(np.median(times.times))
    return run


def with_policy(policy, build):
    tf_keras.mixed_precision.set_global_policy(policy)
    try:
        return build()
    finally:
        tf_keras.mixed_precision.set_global_policy("float32")


def precision_check(tft_output, examples_uri, vocab_size, steps, eval_batches):
    """Same initial weights, same batches: float32 vs mixed_bfloat16 eval loss."""
    def train(policy):
        tf_keras.utils.set_random_seed(7)
        m = with_policy(policy, lambda: char_model.compile_model(
            char_model.build_model(vocab_size, TUTORIAL), 1e-3))
        start = time.perf_counter()
        m.fit(ours_dataset(tft_output, examples_uri), steps_per_epoch=steps, epochs=1, verbose=0)
        seconds = time.perf_counter() - start
        loss = m.evaluate(ours_dataset(tft_output, examples_uri, "eval"), steps=eval_batches,
                          verbose=0)[0]
        return {"eval_loss": float(loss), "train_seconds": seconds}
    f32, bf16 = train("float32"), train("mixed_bfloat16")
    return {"steps": steps, "eval_batches": eval_batches, "float32": f32,
            "mixed_bfloat16": bf16,
            "relative_difference": (bf16["eval_loss"] - f32["eval_loss"]) / f32["eval_loss"]}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pipeline-root", default=os.path.join(common.OUT_DIR, "pipeline_root"))
    # Steps here cost 1-12 s each; the machine's speed drifts by tens of percent over
    # minutes, so many short alternating repetitions beat few long ones.
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--repetitions", type=int, default=6)
    parser.add_argument("--precision-steps", type=int, default=20)
    args = parser.parse_args(argv)

    tft_output, examples_uri = transform_output(args.pipeline_root)
    vocab_size = len(tft_output.vocabulary_by_name(features.VOCAB_NAME)) + \
        features.NUM_RESERVED_IDS
    with open(common.SHAKESPEARE, encoding="utf-8") as f:
        tutorial_ds, tutorial_vocab = tutorial_dataset(f.read())

    def ours(units=1024, jit=False, policy="float32"):
        def build():
            m = char_model.build_model(vocab_size, dataclasses.replace(TUTORIAL, rnn_units=units))
            m.compile(optimizer=tf_keras.optimizers.Adam(1e-3), loss=char_model.MaskedCharLoss(),
                      jit_compile=jit)
            return m
        return contender(with_policy(policy, build), ours_dataset(tft_output, examples_uri),
                         args.warmup, args.steps)

    tutorial_model = TutorialModel(tutorial_vocab)
    tutorial_model.compile(optimizer="adam",
                           loss=tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    contenders = {
        "ours": ours(),
        "tutorial": contender(tutorial_model, tutorial_ds, args.warmup, args.steps),
        "ours_xla": ours(jit=True),
        "ours_gru512": ours(units=512),
        "ours_bf16": ours(policy="mixed_bfloat16"),
    }
    step_times = common.alternate(contenders, args.repetitions)
    chars = BATCH * SEQ
    results = {"batch": BATCH, "seq": SEQ, "steps_per_repetition": args.steps,
               "contenders": {}}
    for name, times in step_times.items():
        units = 512 if name == "ours_gru512" else 1024
        flops = 6 * params_per_char(vocab_size, 256, units) * chars
        median = float(np.median(times))
        results["contenders"][name] = {**common.summary(times), "values": times,
                                       "chars_per_s": chars / median,
                                       "flops_per_step": flops, "gflops_per_s": flops / median / 1e9}
    base = results["contenders"]["ours"]["median"]
    for name, c in results["contenders"].items():
        c["speedup_vs_ours"] = base / c["median"]
    results["ours_vs_tutorial"] = (results["contenders"]["tutorial"]["median"] / base)
    # Each repetition ran ours and the tutorial back to back: their ratio within a
    # repetition is the comparison least disturbed by the machine's drift.
    paired = [t / o for t, o in zip(step_times["tutorial"], step_times["ours"])]
    results["ours_vs_tutorial_paired"] = common.summary(paired)
    if args.precision_steps:
        results["precision_check"] = precision_check(tft_output, examples_uri, vocab_size,
                                                     args.precision_steps, eval_batches=10)
    results["machine"] = common.machine()
    common.save_result("training", results)
    print({n: round(c["chars_per_s"]) for n, c in results["contenders"].items()})
    return results


if __name__ == "__main__":
    main()
