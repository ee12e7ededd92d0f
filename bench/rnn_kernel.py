"""Training characters per CPU-second of a preset's network with Keras' own RNN layers and
with models/recurrent.py's (one matrix product a time step), on this machine's
precision (what `textgen run` would train with), contenders alternated.

The whole train step (DropConnect and the weights' average included) at the preset's batch
and window, steady state; random ids stand in for text, as in bench.batch_throughput.

    python -m bench.rnn_kernel --preset quality
"""
import argparse
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

from bench import common  # noqa: E402
from bench.batch_throughput import compare, contender, setup  # noqa: E402
from pipeline import configs  # noqa: E402

CONTENDERS = {"keras": True, "textgen": False}  # name: keras_rnn (models/recurrent.py)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="quality", choices=configs.presets())
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--repetitions", type=int, default=5)
    args = parser.parse_args(argv)
    config, header = setup(args.preset)
    batch = config.train.batch_size
    runs = {name: contender(config, batch, args.steps, seed=1, keras_rnn=keras_rnn)
            for name, keras_rnn in CONTENDERS.items()}
    results = {**header, "batch_size": batch, "seq_length": config.data.seq_length,
               "steps_per_repetition": args.steps,
               "contenders": compare(runs, args.repetitions)}
    common.save_result("rnn_kernel", results)
    return results


if __name__ == "__main__":
    main()
