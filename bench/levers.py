"""Training levers tried through `textgen run` itself, on tiny Shakespeare.

Each lever is a `textgen run` (a preset and flags) run for each seed, one after another
(never two trainings at once: their CPU times would mean nothing), sharing one pipeline
root so that ExampleGen and Transform run once, each into a serving directory of its own,
without warm start. After each run: the run summary's per-epoch losses and training CPU
time, the Evaluator's figure, and nanoGPT's protocol on the pushed model
(bench/protocols.py), with the machine's CPU, go into bench/results/levers.json — written
after every run, so progress survives an interruption. Resumable: a finished run is
skipped; an interrupted one resumes where its Trainer stopped (BackupAndRestore).

    python -m bench.levers --levers fast,fast_carry --seeds 42,7
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
from typing import Dict, List, Optional

from bench import common

# name → (what it is, `textgen run` flags). `--preset auto` is the recipe `make run` trains
# on the machine: `fast` on a CPU since 2026-12-06 (before, `default` where bf16 runs). The
# `auto_30` levers were measured on an AVX2-only CPU before `fast` cut its windows anew each
# epoch, and keep the fixed windows they were measured with.
AUTO_30 = ["--preset", "auto", "--max-cpu-minutes", "30", "--no-shift-windows"]
LEVERS: Dict[str, tuple] = {
    "auto_30": ("`make run`'s recipe (`--preset auto`), a 30 CPU-minute budget, the ExampleGen's "
                "fixed windows",
                AUTO_30),
    "auto_30_carry": ("the same with carried state (`--carry-state`)",
                      [*AUTO_30, "--carry-state"]),
    "auto_30_carry_cosine": ("the same, the learning rate decaying over the budget's epochs",
                             [*AUTO_30, "--carry-state",
                              "--lr-schedule", "cosine", "--epochs", "5"]),
    "auto_30_ema99": ("`auto_30` with the weights' average over about 100 steps "
                      "(`--ema-momentum 0.99`) instead of 50",
                      [*AUTO_30, "--ema-momentum", "0.99"]),
    "auto_30_seq200": ("`auto_30` with windows of 200 characters (`--seq-length 200`)",
                       [*AUTO_30, "--seq-length", "200"]),
    "auto_30_dropout0.3": ("`auto_30` with dropout 0.3 instead of 0.2",
                           [*AUTO_30, "--dropout", "0.3"]),
    "auto_30_wd0.1": ("`auto_30` with AdamW's weight decay 0.1",
                      [*AUTO_30, "--weight-decay", "0.1"]),
    "auto_30_batch32": ("`auto_30` with batches of 32 (twice the updates an epoch)",
                        [*AUTO_30, "--batch-size", "32"]),
    "auto_30_batch32_dropout0.3": ("`auto_30` with batches of 32 and dropout 0.3",
                                   [*AUTO_30, "--batch-size", "32", "--dropout", "0.3"]),
    "auto_30_batch32_cosine8": ("`auto_30` with batches of 32, the rate decaying over 8 "
                                "epochs (the budget holds about 6: about a fifth of the rate "
                                "is left for the sixth)",
                                [*AUTO_30, "--batch-size", "32", "--lr-schedule", "cosine",
                                 "--epochs", "8"]),
    "auto_30_batch16": ("`auto_30` with batches of 16",
                        [*AUTO_30, "--batch-size", "16"]),
    "auto_30_shift": ("`auto_30` with the windows cut anew each epoch from a random offset "
                      "(`--shift-windows`)",
                      [*AUTO_30[:-1], "--shift-windows"]),
    "auto_30_batch32_shift": ("`auto_30` with batches of 32 and the windows cut anew each "
                              "epoch (`--batch-size 32 --shift-windows`)",
                              [*AUTO_30[:-1], "--batch-size", "32", "--shift-windows"]),
    "fast": ("`--preset fast` as it ships (30 CPU-minute budget, windows cut anew each epoch), "
             "whatever `auto` picks on the machine",
             ["--preset", "fast"]),
    "fast_dropout0.3": ("`fast` with dropout 0.3 instead of 0.2 (on an AMX CPU `fast` "
                        "early-stops at epoch 8-9 of the budget's 9, overfitting)",
                        ["--preset", "fast", "--dropout", "0.3"]),
    "fast_gru1024": ("`fast` with a GRU of 1024 (on an AMX CPU the 768 early-stops, "
                     "overfitting, before the budget is spent)",
                     ["--preset", "fast", "--rnn-units", "1024"]),
    "fast_weightdrop0.2": ("`fast` with DropConnect 0.2 on the GRU's recurrent matrix "
                           "(`--weight-drop 0.2`, AWD-LSTM's regulariser)",
                           ["--preset", "fast", "--weight-drop", "0.2"]),
    "quality": ("`--preset quality` (2 CPU-hour budget; `quality_float32` where the CPU trains "
                "in float32)", ["--preset", "quality"]),
    "quality_shift": ("`--preset quality` with the windows cut anew each epoch",
                      ["--preset", "quality", "--shift-windows"]),
    "quality_gru2x768_shift": ("`--preset quality` with 2 × GRU 768 (about 0.4 of the 2 × "
                               "LSTM 1024's CPU a step), dropout 0.3, the windows cut anew "
                               "each epoch: a candidate for CPUs without native bf16",
                               ["--preset", "quality", "--cell", "gru", "--rnn-units", "768",
                                "--dropout", "0.3", "--shift-windows"]),
    "quality_shift_weightdrop0.2": ("`quality_shift` with DropConnect 0.2 on the LSTMs' "
                                    "recurrent matrices (`--weight-drop 0.2`)",
                                    ["--preset", "quality", "--shift-windows",
                                     "--weight-drop", "0.2"]),
    "quality_shift_weightdrop0.3": ("`quality_shift` with DropConnect 0.3 on the LSTMs' "
                                    "recurrent matrices",
                                    ["--preset", "quality", "--shift-windows",
                                     "--weight-drop", "0.3"]),
    "quality_shift_weightdrop0.2_cosine14": ("`quality_shift_weightdrop0.2` with the rate "
                                             "decaying over 14 epochs (the budget holds 13 "
                                             "on an AMX CPU) instead of 20",
                                             ["--preset", "quality", "--shift-windows",
                                              "--weight-drop", "0.2", "--epochs", "14"]),
    "quality_cosine_budget": ("`--preset quality` with the rate decaying over the epochs the "
                              "CPU budget holds on the machine (projected after each epoch) "
                              "instead of over 20",
                              ["--preset", "quality", "--lr-schedule", "cosine_budget"]),
    "quality_rate_held": ("`--preset quality` with the rate held at its peak until the eval "
                          "loss stalls (`--lr-schedule plateau`: then 0.3 of it) instead of "
                          "decaying over 20 epochs",
                          ["--preset", "quality", "--lr-schedule", "plateau"]),
    "quality_lr3e-3": ("`--preset quality` with Adam's rate peaking at 3e-3 instead of 2e-3 "
                       "(an epoch is about 160 updates: 9-14 epochs are few of them)",
                       ["--preset", "quality", "--learning-rate", "0.003"]),
    "quality_dropout0.35": ("`--preset quality` with dropout 0.35 instead of 0.45 (beside "
                            "DropConnect 0.2, for a budget of 9-10 epochs; shipped since)",
                            ["--preset", "quality", "--dropout", "0.35"]),
    "quality_dropout0.4": ("`--preset quality` with dropout 0.4 instead of 0.35 (0.35 overfits "
                           "by the 12th epoch the faster recurrent kernel fits in the budget)",
                           ["--preset", "quality", "--dropout", "0.4"]),
    "quality_cooldown3": ("`--preset quality` with the rate of the last 3 epochs the budget "
                          "holds taken towards zero (`--cooldown-epochs 3`: ×3/4, 2/4, 1/4); "
                          "the cosine over 20 epochs otherwise ends the run at 0.4 of its peak",
                          ["--preset", "quality", "--cooldown-epochs", "3"]),
    "quality_carry": ("`--preset quality` with carried state",
                      ["--preset", "quality", "--carry-state"]),
}
RESULTS = "levers"
# What the presets as they ship are for, nanoGPT's protocol within a training CPU budget:
# the quality preset's level depends on whether the CPU trains in bf16 (about twice the
# float32 speed, so more of the network fits in the budget).
TARGETS = {"fast": {"float32": (1.45, 30), "mixed_bfloat16": (1.45, 30)},
           "quality": {"float32": (1.43, 120), "mixed_bfloat16": (1.40, 120)}}
OUT_DIR = os.path.join(common.OUT_DIR, "levers")


def run_name(lever: str, seed: int) -> str:
    return f"{lever}_seed{seed}"


def run_key(lever: str, seed: int, machine: Dict) -> str:
    return f"{run_name(lever, seed)} on {common.cpu_kind(machine)}"


def _textgen() -> str:
    return os.path.join(os.path.dirname(sys.executable), "textgen")


def run_lever(lever: str, seed: int, data: str) -> Dict:
    """One `textgen run` of the lever (resumed if interrupted); its figures."""
    name = run_name(lever, seed)
    out = os.path.join(OUT_DIR, name)
    os.makedirs(out, exist_ok=True)
    root = os.path.join(OUT_DIR, "pipeline_root")
    command = [_textgen(), "run", "--data", data, "--pipeline-root", root,
               "--serving-dir", os.path.join(out, "serving"), "--no-warm-start",
               "--seed", str(seed), "--sample-chars", "200", *LEVERS[lever][1]]
    with open(os.path.join(out, "run.log"), "w", encoding="utf-8") as log:
        done = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        raise RuntimeError(f"{name}: textgen run exited {done.returncode}; see "
                           f"{os.path.join(out, 'run.log')}")
    with open(os.path.join(root, "last_run_summary.json"), encoding="utf-8") as f:
        return figures(lever, seed, json.load(f), data)


def figures(lever: str, seed: int, summary: Dict, data: str) -> Dict:
    """A `textgen run`'s figures from its run summary (the pipeline root's
    last_run_summary.json), nanoGPT's protocol measured on its model."""
    # Runs share one pipeline root, so the Evaluator may judge a lever's model against a
    # better one from another lever and not push it: measure the Trainer's model either way.
    model = summary["pushed_path"]
    if model is None:
        from tfx.utils import path_utils
        model = path_utils.serving_model_path(summary["model_uri"])
    protocols = subprocess.run(
        [sys.executable, "-m", "bench.protocols", "--model", model, "--data", data],
        capture_output=True, text=True, check=True)
    training = summary["training"]
    return {"lever": lever, "seed": seed, "flags": LEVERS[lever][1],
            "epochs": [{k: e[k] for k in ("epoch", "loss", "val_loss", "cpu_seconds")}
                       for e in training["epochs"]],
            "exported_epoch": training["exported_epoch"], "stopped": training["stopped"],
            "precision": training["precision"],
            "cpu_minutes": training["cpu_seconds"] / 60,
            "evaluator_nats": summary["eval"]["nats_per_char"], "pushed": summary["pushed"],
            "protocols": json.loads(protocols.stdout), "model": model}


def main(argv: Optional[List[str]] = None) -> Dict:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--levers", default="auto_30,auto_30_carry",
                        help=f"comma-separated, of: {', '.join(LEVERS)}")
    parser.add_argument("--seeds", default="42,7")
    parser.add_argument("--data", default=common.SHAKESPEARE)
    args = parser.parse_args(argv)
    levers = args.levers.split(",")
    unknown = [lever for lever in levers if lever not in LEVERS]
    if unknown:
        parser.error(f"unknown lever(s) {', '.join(unknown)}; choose from {', '.join(LEVERS)}")
    results = common.load_result(RESULTS) or {"runs": {}}
    machine = common.machine()
    for lever in levers:
        for seed in map(int, args.seeds.split(",")):
            name, key = run_name(lever, seed), run_key(lever, seed, machine)
            if key in results["runs"]:
                print(f"{key}: done before, kept", flush=True)
                continue
            print(f"{key}: textgen run {' '.join(LEVERS[lever][1])} --seed {seed}", flush=True)
            results["runs"][key] = {**run_lever(lever, seed, args.data), "machine": machine}
            common.save_result(RESULTS, results)
            r = results["runs"][key]
            print(f"{name}: {r['cpu_minutes']:.1f} CPU-min, Evaluator "
                  f"{r['evaluator_nats']:.4f}, nanoGPT protocol "
                  f"{r['protocols']['nanogpt_nats']:.4f}", flush=True)
    return results


def section(r) -> str:
    """docs/benchmarks.md's table of the levers, from levers.json: each run, then each
    lever's mean and spread over its seeds."""
    if r is None or not r["runs"]:
        return "Not measured yet: `.venv/bin/python -m bench.levers`.\n"
    lines = ["| run | CPU | epochs (eval loss each) | exported | CPU-min | Evaluator nats/char "
             "| nanoGPT protocol |", "|" + " --- |" * 7]
    by_lever: Dict[tuple, List[Dict]] = {}
    for run in r["runs"].values():
        by_lever.setdefault((run["lever"], common.cpu_kind(run["machine"])), []).append(run)
        losses = ", ".join(f"{e['val_loss']:.4f}" for e in run["epochs"])
        lines.append(f"| {run_name(run['lever'], run['seed'])} | {run['machine']['cpu']} "
                     f"({run['machine']['vector_extensions']}, {run['precision']}) | {losses} | "
                     f"{run['exported_epoch']} | "
                     f"{run['cpu_minutes']:.1f} | {run['evaluator_nats']:.4f} | "
                     f"{run['protocols']['nanogpt_nats']:.4f} |")
    lines += ["", "| lever | CPU | what | seeds | nanoGPT protocol: mean (spread) | "
              "CPU-min: mean |", "|" + " --- |" * 6]
    for (lever, kind), runs in by_lever.items():
        nano = [run["protocols"]["nanogpt_nats"] for run in runs]
        lines.append(f"| {lever} | {kind} | {LEVERS[lever][0] if lever in LEVERS else '-'} | "
                     f"{', '.join(str(run['seed']) for run in runs)} | "
                     f"{statistics.mean(nano):.4f} ({max(nano) - min(nano):.4f}) | "
                     f"{statistics.mean(run['cpu_minutes'] for run in runs):.1f} |")
    return "\n".join(lines) + "\n"


def shipped_section(r, recipes: Dict[str, Dict]) -> str:
    """docs/benchmarks.md's table of the presets as they ship (the levers named after them)
    against their targets and, on the same CPU kind, the tutorial's recipe (bench.quality's
    `--preset tutorial` runs, which train until the tutorial's level of 1.54)."""
    runs = (r or {}).get("runs") or {}
    kinds: Dict[str, Dict[str, List[Dict]]] = {}
    for run in runs.values():
        if run["lever"] in TARGETS:
            kinds.setdefault(common.cpu_kind(run["machine"]), {}).setdefault(
                run["lever"], []).append(run)
    if not kinds:
        return "Not measured yet: `.venv/bin/python -m bench.levers --levers fast,quality`.\n"
    lines = ["| CPU | recipe | seeds | epochs | Evaluator nats/char | nanoGPT protocol: mean "
             "(spread) | CPU-min: mean (max) | target | met |", "|" + " --- |" * 9]
    for kind, by_lever in kinds.items():
        tutorials = [t for t in recipes.values() if t["preset"] == "tutorial"
                     and not t["overrides"] and common.cpu_kind(t["machine"]) == kind]
        for t in tutorials:
            lines.append(f"| {kind} | the tutorial's recipe (`--preset tutorial`, "
                         f"{t['precision']}), until 1.54 | {t['train']['seed']} | "
                         f"{len(t['epochs'])} | {t['evaluator_nats']:.4f} | "
                         f"{t['nanogpt_nats']:.4f} | {t['cpu_minutes']:.1f} | | |")
        for lever, seeded in by_lever.items():
            nano = [run["protocols"]["nanogpt_nats"] for run in seeded]
            minutes = [run["cpu_minutes"] for run in seeded]
            level, budget = TARGETS[lever][seeded[0]["precision"]]
            met = statistics.mean(nano) <= level and max(minutes) <= budget
            # A target counts as met on the mean of two seeds.
            verdict = (("yes" if met else "no") if len(seeded) > 1
                       else ("one seed so far" if met else "no (one seed)"))
            lines.append(
                f"| {kind} | `{lever}` ({seeded[0]['precision']}) | "
                f"{', '.join(str(run['seed']) for run in seeded)} | "
                f"{', '.join(str(len(run['epochs'])) for run in seeded)} | "
                f"{statistics.mean(run['evaluator_nats'] for run in seeded):.4f} | "
                f"{statistics.mean(nano):.4f} ({max(nano) - min(nano):.4f}) | "
                f"{statistics.mean(minutes):.1f} ({max(minutes):.1f}) | "
                f"≤ {level:.2f} within {budget} CPU-min | {verdict} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
