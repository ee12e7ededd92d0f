"""Training characters per CPU-second of a preset's network at several batch sizes, on this
machine's precision (what `textgen run` would train with), contenders alternated.

A larger batch pays only if its characters come faster than its updates thin out: this
measures the first half, steady state, for the preset's whole train step (DropConnect and
the weights' average included). Random ids stand in for text (the step is GEMM-bound:
bench/NOTES.md found the input pipeline costs nothing measurable).

    python -m bench.batch_throughput --preset quality --batches 64,128,256
"""
import argparse
import dataclasses
import os
import resource
from typing import Callable, Dict, Tuple

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import numpy as np  # noqa: E402
import tf_keras  # noqa: E402

from bench import common  # noqa: E402
from models import model as char_model, precision, weight_drop  # noqa: E402
from pipeline import configs  # noqa: E402

VOCAB = 67  # tiny Shakespeare's 65 characters and the reserved ids


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def contender(config: configs.Config, batch: int, steps: int, seed: int,
              keras_rnn: bool = False):
    """A compiled train step of `config`'s network at `batch` (`keras_rnn`: with Keras' own
    RNN layers); returns a run measuring CPU seconds per character over `steps` steps."""
    network = char_model.build_model(VOCAB, config.model, keras_rnn=keras_rnn)
    if config.model.weight_drop:
        network = weight_drop.WeightDropped(network, config.model.weight_drop)
    t = config.train
    char_model.compile_model(network, t.learning_rate, t.clipnorm, t.weight_decay,
                             t.ema_momentum)
    ids = np.random.default_rng(seed).integers(1, VOCAB, (batch, config.data.seq_length + 1))
    inputs, targets = ids[:, :-1], ids[:, 1:]
    for _ in range(2):  # tracing, first steps
        network.train_on_batch(inputs, targets)

    def run() -> float:
        start = cpu_seconds()
        for _ in range(steps):
            network.train_on_batch(inputs, targets)
        return (cpu_seconds() - start) / (steps * inputs.size)
    return run


def setup(preset: str) -> Tuple[configs.Config, Dict]:
    """The preset's settings, under the precision `textgen run` would train with here (set
    as Keras' global policy), and the results' header saying so."""
    config = configs.load(preset=configs.resolve_preset(preset)[0])
    policy, why = precision.choose(config.train.precision)
    tf_keras.mixed_precision.set_global_policy(policy)
    return config, {"preset": preset, "network": dataclasses.asdict(config.model),
                    "precision": policy, "precision_reason": why, "machine": common.machine()}


def compare(runs: Dict[str, Callable[[], float]], repetitions: int) -> Dict[str, Dict]:
    """Alternates the contenders' runs (each: CPU seconds per character); for each, its
    characters per CPU-second and their ratio to the first contender's, printed as well."""
    seconds = common.alternate(runs, repetitions)
    first = next(iter(runs))
    base = float(np.median(seconds[first]))
    results = {}
    for name in runs:
        median = float(np.median(seconds[name]))
        results[name] = {"chars_per_cpu_s": 1 / median, "vs_first": base / median,
                         "cpu_s_per_char": seconds[name]}
        print(f"{name}: {1 / median:,.0f} characters per CPU-second, "
              f"{base / median:.2f}× {first}'s", flush=True)
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="quality", choices=configs.presets())
    parser.add_argument("--batches", default="64,128,256")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--repetitions", type=int, default=3)
    args = parser.parse_args(argv)
    config, header = setup(args.preset)
    runs = {f"batch {b}": contender(config, int(b), args.steps, seed=int(b))
            for b in args.batches.split(",")}
    results = {**header, "steps_per_repetition": args.steps,
               "batches": compare(runs, args.repetitions)}
    common.save_result("batch_throughput", results)
    return results


if __name__ == "__main__":
    main()
