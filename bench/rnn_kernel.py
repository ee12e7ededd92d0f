"""Training characters per CPU-second of a preset's network with Keras' own RNN layers and
with models/recurrent.py's (one matrix product a time step), on this machine's
precision (what `textgen run` would train with), contenders alternated.

The whole train step (DropConnect and the weights' average included) at the preset's batch
and window, steady state; random ids stand in for text, as in bench.batch_throughput.

The kernel's gain differs by preset and by CPU kind (where bf16 makes the products cheap,
the work it takes out of the time loop weighs more), so bench/results/rnn_kernel.json keeps
one measurement per preset and CPU kind, the latest.

    python -m bench.rnn_kernel --preset quality
"""
import argparse
import os
from typing import Dict, Optional

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

from bench import common  # noqa: E402
from pipeline import configs  # noqa: E402

RESULTS = "rnn_kernel"
CONTENDERS = {"keras": True, "textgen": False}  # name: keras_rnn (models/recurrent.py)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="quality", choices=configs.presets())
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--repetitions", type=int, default=5)
    args = parser.parse_args(argv)
    # TensorFlow only here: bench.report imports this module for its section.
    from bench.batch_throughput import compare, contender, setup
    config, header = setup(args.preset)
    batch = config.train.batch_size
    runs = {name: contender(config, batch, args.steps, seed=1, keras_rnn=keras_rnn)
            for name, keras_rnn in CONTENDERS.items()}
    results = common.load_result(RESULTS) or {"runs": {}}
    results["runs"][f"{args.preset} on {common.cpu_kind(header['machine'])}"] = {
        **header, "batch_size": batch, "seq_length": config.data.seq_length,
        "steps_per_repetition": args.steps, "contenders": compare(runs, args.repetitions)}
    common.save_result(RESULTS, results)
    return results


def section(r: Optional[Dict]) -> str:
    """docs/benchmarks.md's table: each preset and CPU kind's training characters per
    CPU-second with Keras' layers and with models/recurrent.py's."""
    if r is None or not r["runs"]:
        return "Not measured yet: `.venv/bin/python -m bench.rnn_kernel --preset quality`.\n"
    lines = ["| preset | network | CPU | precision | Keras' layers: chars/CPU-s | "
             "models/recurrent.py: chars/CPU-s | ratio | repetitions | measured |",
             "|" + " --- |" * 9]
    for run in r["runs"].values():
        keras, ours = run["contenders"]["keras"], run["contenders"]["textgen"]
        net = run["network"]
        lines.append(
            f"| `{run['preset']}` | {net['rnn_layers']} × {net['cell'].upper()} "
            f"{net['rnn_units']}, batch {run['batch_size']} × {run['seq_length']} | "
            f"{common.cpu_kind(run['machine'])} | {run['precision']} | "
            f"{keras['chars_per_cpu_s']:,.0f} | {ours['chars_per_cpu_s']:,.0f} | "
            f"**{ours['vs_first']:.2f}×** | {len(ours['cpu_s_per_char'])} × "
            f"{run['steps_per_repetition']} steps | {run['machine']['date']} |")
    return ("The whole train step (dropout, DropConnect and the weights' average included), "
            "steady state, the two contenders alternated; ratio = median over median.\n\n"
            + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
