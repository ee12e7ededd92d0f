"""Training throughput (characters/second), steady state, contenders alternated:

  tutorial        the tutorial's pipeline: text → StringLookup → tf.data → its GRU 1024
                  model → fit; float32, batch 64
  ours            the Trainer's path (Transform output → models.trainer.input_fn →
                  build_model), the same network, float32, batch 64
  ours_default    the Trainer's path, the same network, at the default precision (`auto`:
                  what this machine runs fastest) and the default batch size
  default_recipe  what `textgen run` trains by default: the default network, precision
                  and batch size

Characters per second is a means; time to a given eval loss (bench.quality) is the end.
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
from components import names
from models import features, model as char_model, precision, trainer
from models.settings import ModelSettings, TrainSettings
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
        node = metadata.node_runs(store, run).get(names.TRANSFORM)
        if node and names.TRANSFORM_GRAPH in node.outputs:
            graph = node.outputs[names.TRANSFORM_GRAPH][0].uri
            examples = node.outputs["transformed_examples"][0].uri
            return tft.TFTransformOutput(graph), examples
    raise RuntimeError(f"no Transform output under {pipeline_root}: run bench.pipeline_cost first")


def ours_dataset(tft_output, examples_uri, split="train", batch=BATCH):
    files = glob.glob(os.path.join(examples_uri, f"Split-{split}", "*"))
    return trainer.input_fn(files, _Accessor(), tft_output.transformed_metadata.schema,
                            batch, shuffle=split == "train", repeat=True, seed=0)


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


def params_per_char(vocab_size, network: ModelSettings):
    """Multiply-adds per character of one forward step (RNN gates + output layer)."""
    gates = 3 if network.cell == "gru" else 4
    inputs, total = network.embedding_dim, 0
    for _ in range(network.rnn_layers):
        total += gates * network.rnn_units * (inputs + network.rnn_units)
        inputs = network.rnn_units
    return total + network.rnn_units * vocab_size


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


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pipeline-root", default=os.path.join(common.OUT_DIR, "pipeline_root"))
    # Steps here cost 1-12 s each; the machine's speed drifts by tens of percent over
    # minutes, so many short alternating repetitions beat few long ones.
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--repetitions", type=int, default=6)
    args = parser.parse_args(argv)

    tft_output, examples_uri = transform_output(args.pipeline_root)
    vocab_size = len(tft_output.vocabulary_by_name(features.VOCAB_NAME)) + \
        features.NUM_RESERVED_IDS
    with open(common.SHAKESPEARE, encoding="utf-8") as f:
        tutorial_ds, tutorial_vocab = tutorial_dataset(f.read())

    default_policy, why = precision.choose(TrainSettings().precision)
    default_batch = TrainSettings().batch_size

    def ours(network, policy, batch):
        def build():
            m = char_model.build_model(vocab_size, network)
            m.compile(optimizer=tf_keras.optimizers.Adam(1e-3), loss=char_model.MaskedCharLoss())
            return m
        return contender(with_policy(policy, build),
                         ours_dataset(tft_output, examples_uri, batch=batch),
                         args.warmup, args.steps)

    tutorial_model = TutorialModel(tutorial_vocab)
    tutorial_model.compile(optimizer="adam",
                           loss=tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    setups = {
        "tutorial": (TUTORIAL, "float32", BATCH),
        "ours": (TUTORIAL, "float32", BATCH),
        "ours_default": (TUTORIAL, default_policy, default_batch),
        "default_recipe": (ModelSettings(), default_policy, default_batch),
    }
    contenders = {name: ours(*setup) for name, setup in setups.items() if name != "tutorial"}
    contenders = {"tutorial": contender(tutorial_model, tutorial_ds, args.warmup, args.steps),
                  **contenders}
    step_times = common.alternate(contenders, args.repetitions)
    results = {"seq": SEQ, "steps_per_repetition": args.steps, "default_precision": default_policy,
               "default_precision_reason": why, "contenders": {}}
    for name, times in step_times.items():
        network, policy, batch = setups[name]
        chars = batch * SEQ
        flops = 6 * params_per_char(vocab_size, network) * chars
        median = float(np.median(times))
        results["contenders"][name] = {**common.summary(times), "values": times,
                                       "network": dataclasses.asdict(network),
                                       "precision": policy, "batch": batch,
                                       "chars_per_s": chars / median, "flops_per_step": flops,
                                       "gflops_per_s": flops / median / 1e9}
    c = results["contenders"]
    for name, v in c.items():
        v["speed_vs_tutorial"] = v["chars_per_s"] / c["tutorial"]["chars_per_s"]
    # Each repetition ran every contender back to back: ratios within a repetition are the
    # comparison least disturbed by the machine's drift.
    for name in ("ours", "ours_default"):
        paired = [(setups[name][2] / t_ours) / (BATCH / t_tut)
                  for t_tut, t_ours in zip(step_times["tutorial"], step_times[name])]
        results[f"{name}_vs_tutorial_paired"] = common.summary(paired)
    results["machine"] = common.machine()
    common.save_result("training", results)
    print({n: round(c["chars_per_s"]) for n, c in results["contenders"].items()})
    return results


if __name__ == "__main__":
    main()
