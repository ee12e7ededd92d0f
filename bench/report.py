"""Writes docs/benchmarks.md and its plots (docs/bench_*.png) from bench/results/*.json.

A section whose results are missing says which command produces them; nothing here
measures, so the report can be re-written at any time (`python -m bench.report`).

Over 350 lines on purpose: one section function per benchmark, each short, and the page is
easier to keep consistent when its whole layout is read in one file.
"""
import math
import os
from typing import Dict, List, Optional

from bench import common, levers, rnn_kernel, serving_mixed, serving_swap
from models import precision

DOC = os.path.join(common.DOCS_DIR, "benchmarks.md")
NANOGPT = [("nanoGPT shakespeare_char (6-layer transformer, 10.7M params, GPU)", 1.4697),
           ("nanoGPT shakespeare_char, its CPU configuration (4 layers, 128 wide, 2,000 iters)",
            1.88)]


def table(header: List[str], rows: List[List[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def spread(s: Dict) -> str:
    return f"{s['min']:.3g}–{s['max']:.3g} (n={s['n']})"


def plot(name: str, draw) -> str:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    draw(ax)
    fig.tight_layout()
    path = os.path.join(common.DOCS_DIR, f"bench_{name}.png")
    fig.savefig(path)
    plt.close(fig)
    return f"![{name}](bench_{name}.png)"


def missing(command: str) -> str:
    return f"_Not measured yet: run `{command}`._\n"


def machine_section(results: List[Optional[Dict]]) -> str:
    machines = [r["machine"] for r in results if r and "machine" in r]
    if not machines:
        return missing("make bench")
    m = machines[-1]
    return table(["", ""], [["CPU", m["cpu"]], ["cores", m["cores"]],
                            ["vector extensions", m.get("vector_extensions", "?")],
                            ["TensorFlow", m["tensorflow"]], ["Python", m["python"]],
                            ["measured", ", ".join(sorted({x["date"] for x in machines}))]]) + "\n"


def training_section(r: Optional[Dict]) -> str:
    if not r:
        return missing("make bench")
    if "ours_default_vs_tutorial_paired" not in r:
        return missing("make bench") + "(The results on file predate the current contenders.)\n"
    names = {"tutorial": "tutorial (text → StringLookup → tf.data → fit)",
             "ours": "ours (the Trainer's path: Transform output → input_fn → build_model)",
             "ours_default": "ours at the default precision and batch size",
             "default_recipe": "`textgen run`'s default network, precision and batch size"}
    c = r["contenders"]
    rows = [[names.get(n, n), f"{v['network']['cell']} {v['network']['rnn_layers']}×"
             f"{v['network']['rnn_units']}", v["precision"], str(v["batch"]),
             f"{v['median']:.3f}", spread(v), f"{v['chars_per_s']:,.0f}",
             f"{v['speed_vs_tutorial']:.2f}", f"{v['gflops_per_s']:.1f}"] for n, v in c.items()]
    m = r.get("machine", {})
    out = [f"Sequences of {r['seq']} characters, {r['steps_per_repetition']} steps per "
           f"repetition after a warm-up, contenders alternated; step time: median of the "
           f"repetitions (spread: min–max). Machine: {m.get('cpu')} "
           f"({m.get('vector_extensions')}); the default precision here is "
           f"{r['default_precision']} ({r['default_precision_reason']}).\n",
           table(["contender", "network", "precision", "batch", "s/step", "spread", "chars/s",
                  "chars/s vs tutorial", "GFLOP/s"], rows), ""]
    for name in ("ours", "ours_default"):
        p = r[f"{name}_vs_tutorial_paired"]
        out.append(f"**{names[name]} vs the tutorial, chars/s paired within each repetition: "
                   f"median {p['median']:.2f}×, {spread(p)}.**")
    out += ["", "FLOP estimate of one step: 3 (forward + backward) × 2 × multiply-adds per "
            "character (RNN gates + output layer) × characters; GFLOP/s is that over the "
            "measured step time.", ""]
    out.append(plot("training", lambda ax: (
        ax.barh(list(c)[::-1], [v["chars_per_s"] for v in c.values()][::-1], color="#4c72b0"),
        ax.set_xlabel("training characters / second (median)"),
        ax.set_title("Training throughput"))))
    return "\n".join(out) + "\n"


def generation_section(r: Optional[Dict]) -> str:
    if not r:
        return missing("make bench")
    names = {"tutorial": "(a) tutorial: Python loop over the one-step signature",
             "generate": "(b) `generate` signature, in process",
             "grpc": "(c) `generate` through the gRPC server",
             "floor": "(d) floor: bare tf.while_loop, argmax, no strings"}
    rows = []
    for batch, b in r["batches"].items():
        for n in names:
            v = b[n]
            rows.append([batch, names[n], f"{v['median']:.3f}", spread(v),
                         f"{v['chars_per_s']:,.0f}", f"{v['x_floor']:.2f}×"])
        paired = (f" (paired per repetition: {b['grpc_vs_generate_paired']:.2f}×)"
                  if "grpc_vs_generate_paired" in b else "")
        rows.append([batch, "**gRPC / in-process** (c)/(b)", "", "", "",
                     f"**{b['grpc_vs_generate']:.2f}×**{paired}"])
        if "generate_vs_floor_paired" in b:
            rows.append([batch, "(b)/(d) paired per repetition", "", "", "",
                         f"{b['generate_vs_floor_paired']:.2f}×"])
    batches = list(r["batches"])

    def draw(ax):
        width = 0.2
        for i, n in enumerate(names):
            ax.bar([j + (i - 1.5) * width for j in range(len(batches))],
                   [r["batches"][b][n]["chars_per_s"] for b in batches], width, label=n)
        ax.set_xticks(range(len(batches)), [f"batch {b}" for b in batches])
        ax.set_yscale("log")
        ax.set_ylabel("characters / second")
        ax.set_title(f"Generating {r['num_chars']} characters")
        ax.legend(fontsize=7)
    return "\n".join([
        f"{r['num_chars']} characters per row, GRU {r['rnn_units']}; seconds per call, "
        f"median and spread; ×floor = time / floor's time (lower is better).\n",
        table(["batch", "way", "s/call", "spread", "chars/s", "× floor"], rows), "",
        plot("generation", draw)]) + "\n"


def ratio_to_one(level: Dict, alone: float) -> float:
    """Paired within rounds when the levels were measured in rounds."""
    return level.get("paired_ratio", level["chars_per_s"] / alone)


def serving_section(r: Optional[Dict]) -> str:
    if not r:
        return missing("make bench")
    rows, ratios = [], []
    for mode, runs in r["modes"].items():
        for batching, levels in runs.items():
            alone = levels[0]["chars_per_s"] if levels and levels[0]["clients"] == 1 else None
            for v in levels:
                rows.append([mode, batching, v["clients"], f"{v['requests_per_s']:,.1f}",
                             f"{v['chars_per_s']:,.0f}",
                             f"{ratio_to_one(v, alone):.2f}×" if alone else "",
                             f"{v['p50_ms']:.1f}", f"{v['p99_ms']:.1f}",
                             f"{v['p50_stream_ms'] / 1000:.2f}" if "p50_stream_ms" in v else "",
                             v["errors"]])
            if alone and levels[-1]["clients"] > 1:
                last = levels[-1]
                ratios.append(f"`{mode}`, batching {batching}: {last['clients']} clients make "
                              f"{ratio_to_one(last, alone):.2f}× the chars/s of one "
                              f"(p50 {last['p50_ms']:.0f} ms vs {levels[0]['p50_ms']:.0f} ms)")

    def draw(ax):
        for mode, runs in r["modes"].items():
            for batching, levels in runs.items():
                ax.plot([v["clients"] for v in levels], [v["chars_per_s"] for v in levels],
                        "o-" if batching == "on" else "o--",
                        label=f"{mode}, batching {batching}")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("concurrent clients")
        ax.set_ylabel("characters / second")
        ax.set_title("Serving under load (loopback gRPC)")
        ax.legend()
    config = r.get("batching_config", "").strip()
    rounds = r.get("rounds", 1)  # results written before rounds existed had one
    in_rounds, medians = (
        (f"the levels measured in turn {rounds} times, ",
         " (the median of the rounds' ratios; the row shown is the median round)")
        if rounds > 1 else ("", ""))
    return "\n".join([
        f"`textgen serve` in its own process; N client threads on loopback gRPC, "
        f"{r['seconds_per_level']:.0f} s per level, {in_rounds}each request "
        f"{r['chars_per_request']} characters at batch 1 (`generate`), or one character per "
        f"request (`stream`: "
        f"the one-step signature, state carried by the client). GRU {r['rnn_units']}. "
        f"Batching on: `--enable_batching` with these parameters: "
        f"`{' '.join(config.splitlines())}`. × 1 client: chars/s over one client's in the "
        f"same run{medians}.\n",
        table(["mode", "batching", "clients", "requests/s", "chars/s", "× 1 client", "p50 ms",
               "p99 ms", "p50 200-char stream s", "errors"], rows), "",
        *[f"- {line}" for line in ratios], "", plot("serving", draw)]) + "\n"


def pipeline_section(r: Optional[Dict]) -> str:
    if not r:
        return missing("make bench")
    first, cached = r["first"], r["cached"]
    command = first["command"]
    names = list(first["components"])
    rows = [[n, f"{first['components'][n].get('seconds', 0):.1f}",
             f"{cached['components'].get(n, {}).get('seconds', 0):.1f}",
             cached["components"].get(n, {}).get("state", "")] for n in names]
    return "\n".join([
        f"`textgen {command}` (the small configuration: tutorial-sized model, "
        f"20 steps), then the same command again. Seconds per component from ML Metadata's "
        f"execution timestamps.\n",
        table(["component", "first run s", "re-run s", "re-run state"], rows), "",
        table(["", "seconds"], [["whole first run (process wall time)",
                                 f"{first['wall_seconds']:.1f}"],
                                ["cached re-run (process wall time)",
                                 f"{cached['wall_seconds']:.1f}"],
                                ["`textgen --help` start-up (median)",
                                 f"{r['help']['median']:.2f} ({spread(r['help'])})"]])]) + "\n"


def quality_section(r: Optional[Dict]) -> str:
    if not r or not r.get("tries"):
        return missing("make bench-quality")
    rows = []
    for name, t in r["tries"].items():
        status = "done: " + t["stopped"] if t["done"] else "in progress / interrupted"
        if t.get("took_over"):
            status += (f"; epochs 1-{t['took_over']['epochs']} are `{t['took_over']['try']}`'s"
                       " (the same run until its plateau)")
        if "best_eval_loss" in t:
            rows.append([f"`{name}`", t["try"]["what"], f"{t['params']:,}" if t["params"] else "",
                         f"{t['best_epoch']} of {len(t['epochs'])}",
                         f"{t['train_loss_at_best']:.4f}", f"**{t['best_eval_loss']:.4f}**",
                         f"{t['bits']:.4f}", f"{t['perplexity']:.3f}",
                         f"{t['streamed_eval_loss']:.4f}" if t.get("streamed_eval_loss") else "",
                         f"{t['cpu_hours']:.2f}", status])
    refs = [[label, f"{loss:.4f}", f"{loss / math.log(2):.4f}", f"{math.exp(loss):.3f}"]
            for label, loss in NANOGPT]

    def draw(ax):
        for name, t in r["tries"].items():
            # A try that took over another's epochs is drawn from where it branches off.
            shown = t["epochs"][(t.get("took_over") or {"epochs": 1})["epochs"] - 1:]
            epochs = [e["epoch"] for e in shown]
            line, = ax.plot(epochs, [e["eval_loss"] for e in shown], "o-",
                            label=f"{name} eval")
            ax.plot(epochs, [e["train_loss"] for e in shown], "--",
                    color=line.get_color(), label=f"{name} train")
        ax.axhline(NANOGPT[0][1], color="grey", linestyle=":", label="nanoGPT 1.4697")
        ax.set_xlabel("epoch")
        ax.set_ylabel("loss, nats/char")
        ax.set_title("Tiny Shakespeare, held-out last 10%")
        ax.legend(fontsize=7, ncol=2)
    out = [f"Measured before the Trainer had early stopping and presets, by an earlier "
           f"`bench/quality.py` with its own loop, on {r['machine']['cpu']} "
           f"({r['machine']['vector_extensions']}), float32; kept as the record of what each "
           "idea was worth.\n",
           f"Tiny Shakespeare: the first 90% trains ({r['train_chars']:,} characters), the "
           f"last 10% is held out ({r['eval_chars']:,}); vocabulary {r['vocab_size']} ids "
           f"(65 characters + [PAD], [UNK]); batch {r['batch']} × 100; Adam; one epoch = "
           f"one pass over the training windows. A try stops when its eval loss has not "
           f"improved for {r['patience']} epoch{'' if r['patience'] == 1 else 's'} "
           f"(at most {r['max_epochs']}); its best epoch's weights are kept. CPU-hours are "
           "the training process's CPU time (for a try that took over another's epochs, "
           "theirs included).\n",
           "Eval loss = mean NLL per held-out character over 101-character windows read from "
           "a zero state (what the pipeline's Evaluator computes); streamed = the held-out "
           "text read as 32 long streams with the state carried (more context per "
           "character, as in nanoGPT's 256-character blocks). Train loss is the mean over the "
           "epoch's batches (dropout on), so early epochs show it above the eval loss.\n",
           table(["try", "what", "params", "best epoch", "train loss", "eval loss nats/char",
                  "bits/char", "perplexity", "streamed eval nats", "CPU-hours", "status"], rows),
           "", "Published references (same split, validation loss in nats/char):\n",
           table(["reference", "nats/char", "bits/char", "perplexity"], refs), "",
           plot("quality", draw)]
    tq = r.get("text_quality")
    if tq:
        rows = [[f"temperature {temp}", f"{v['words_in_training']:.3f}", f"{v['distinct_2']:.3f}",
                 f"{v['distinct_3']:.3f}", v["longest_copy_chars"],
                 v["median_longest_copy_chars"], repr(v["longest_copy"])]
                for temp, v in tq["temperatures"].items()]
        h = tq["held_out_text"]
        rows.append(["held-out real text (reference)", f"{h['words_in_training']:.3f}",
                     f"{h['distinct_2']:.3f}", f"{h['distinct_3']:.3f}", h["longest_copy_chars"],
                     h["median_longest_copy_chars"], repr(h["longest_copy"])])
        out += ["", "### Generated text", "",
                f"Model: `{tq['model']}`, epoch {tq.get('model_epoch')} (the lowest eval loss"
                f"{'' if tq.get('model_done', True) else ' so far; its try was still running'})."
                f" {tq['samples']} samples of "
                f"{tq['sample_chars']} characters per temperature from the `generate` "
                f"signature, prompt {tq['prompt']!r}, seed 1. Words are `[A-Za-z']+`, "
                f"lower-cased; distinct-n over word n-grams pooled across samples; "
                f"longest copy = the longest substring found verbatim in the training text.\n",
                table(["", "words in training text", "distinct-2", "distinct-3",
                       "longest copy (chars)", "median per sample", "longest copy"], rows), ""]
        for temp, v in tq["temperatures"].items():
            out += [f"Temperature {temp}, start of the first sample:", "", "```",
                    v["example"].rstrip(), "```", ""]
    return "\n".join(out) + "\n"


# Eval-loss levels whose CPU time to reach is tabled: the tutorial's own best, the
# default recipe's target.
TARGETS = (1.54, 1.50)
# The tutorial's runs and the recipes set side by side with each (run on the same machine):
# the default and the preset made for speed (what `--preset auto` picks on a CPU); on an
# AVX2-only CPU, `fast` and the `default` preset.
SIDE_BY_SIDE = {"tutorial": ("default", "fast"),
                "tutorial_avx2": ("fast_onednn_avx2", "fast_ema_avx2", "fast_avx2", "default_avx2")}


def cpu_label(machine: Dict[str, str]) -> str:
    """The CPU's name and what decides its training speed here: one model name (\"AMD
    EPYC\") covers AVX2-only and AVX-512 BF16 generations."""
    ext = machine["vector_extensions"].split()
    kind = ("AMX" if "amx_bf16" in ext else "AVX-512 BF16" if "avx512_bf16" in ext
            else "AVX-512" if "avx512f" in ext else "AVX2" if "avx2" in ext else "no AVX2")
    return f"{machine['cpu']} ({kind}, oneDNN {onednn_of(machine)})"


def onednn_of(machine: Dict[str, str]) -> str:
    """Whether TensorFlow ran oneDNN's kernels: recorded since 2026-12-02; before, nothing
    set TF_ENABLE_ONEDNN_OPTS, so TensorFlow's own rule decided from the CPU."""
    if "onednn" in machine:
        return machine["onednn"]
    return "on" if precision.onednn_on(machine["vector_extensions"].split(), {}) else "off"


def cpu_minutes_to(epochs: List[Dict], level: float) -> Optional[float]:
    """Training CPU-minutes until the first epoch at or below `level` (None: never)."""
    return next((e["cpu_minutes_total"] for e in epochs if e["eval_loss"] <= level), None)


def side_by_side(recipes: Dict[str, Dict]) -> List[str]:
    """Each tutorial run against the recipes set beside it, to the tutorial's best level
    and to every level its epochs reached; a tutorial run stopped above the level gives a
    lower bound."""
    lines = []
    for tutorial_name, names in SIDE_BY_SIDE.items():
        tutorial = recipes.get(tutorial_name)
        if tutorial and tutorial["epochs"]:
            for name in names:
                if recipes.get(name):
                    lines += compare(tutorial_name, tutorial, name, recipes[name])
    return lines


def compare(tutorial_name: str, tutorial: Dict, name: str, ours_recipe: Dict) -> List[str]:
    if not ours_recipe["epochs"]:
        return []
    level = TARGETS[0]
    ours = cpu_minutes_to(ours_recipe["epochs"], level)
    theirs = cpu_minutes_to(tutorial["epochs"], level)
    mine, other = ours_recipe["machine"], tutorial["machine"]
    if all(mine[k] == other[k] for k in ("cpu", "vector_extensions")):
        where = f"both on {cpu_label(mine)}: {mine['vector_extensions']}"
        if onednn_of(mine) != onednn_of(other):
            where = (f"both on {mine['cpu']}: {mine['vector_extensions']}; oneDNN "
                     f"{onednn_of(mine)} for `{name}`, {onednn_of(other)} for `{tutorial_name}`")
    else:
        where = (f"`{name}` on {cpu_label(mine)}, `{tutorial_name}` on {cpu_label(other)}: "
                 "not comparable")
    if ours is None:
        # Not there yet (an interrupted run): the levels on the way still compare.
        last = ours_recipe["epochs"][-1]
        verdict = (f"`{name}` had not reached it yet, {last['eval_loss']:.4f} at epoch "
                   f"{last['epoch']} after {last['cpu_minutes_total']:.0f} CPU-minutes")
    elif theirs is not None:
        verdict = (f"the tutorial's recipe needed {theirs:.0f} CPU-minutes, `{name}` "
                   f"{ours:.0f}: **{theirs / ours:.1f}×**")
    else:
        last = tutorial["epochs"][-1]
        verdict = (f"the tutorial's recipe had not reached it after "
                   f"{last['cpu_minutes_total']:.0f} CPU-minutes (eval loss "
                   f"{last['eval_loss']:.4f} at epoch {last['epoch']}), `{name}` needed "
                   f"{ours:.0f}: **more than {last['cpu_minutes_total'] / ours:.1f}×**")
    # Not only at the end: at every eval loss the tutorial's run reached on its way.
    reached = [(e, cpu_minutes_to(ours_recipe["epochs"], e["eval_loss"]))
               for e in tutorial["epochs"]]
    ratios = [(e["cpu_minutes_total"] / mins, e["eval_loss"]) for e, mins in reached
              if mins is not None]
    if ratios:
        worst, at = min(ratios)
        verdict += (f"; over the {len(ratios)} eval losses its epochs reached (down to "
                    f"{min(r[1] for r in ratios):.4f}), `{name}` was "
                    + (f"no slower at any: {worst:.1f}× at the least (at {at:.4f})"
                       if worst >= 1 else f"**slower** at {at:.4f} ({worst:.2f}×)"))
    # An epoch's CPU time drifts between hours on a shared host: say when each ran.
    when = (f" (runs ending {mine['date']} and {other['date']})"
            if mine["date"] != other["date"] else "")
    return ["", f"Time to the tutorial's own best level (≤ {level}), {where}{when}: "
                f"{verdict}."]


def time_to_quality_section(r: Optional[Dict]) -> str:
    recipes = (r or {}).get("recipes") or {}
    if not recipes:
        return missing("make bench-quality")
    rows = []
    for name, t in recipes.items():
        epochs = t["epochs"]
        if not epochs:
            continue
        best = min(epochs, key=lambda e: e["eval_loss"])
        reach = [cpu_minutes_to(epochs, level) for level in TARGETS]
        rows.append([f"`{name}`", t["what"], cpu_label(t["machine"]), t["precision"],
                     f"{t['model']['cell']} {t['model']['rnn_layers']}×{t['model']['rnn_units']}"
                     f", dropout {t['model']['dropout']}",
                     f"{t['train']['batch_size']} / {t['train']['learning_rate']:g}",
                     f"{best['epoch']} of {len(epochs)}", f"**{best['eval_loss']:.4f}**",
                     f"{t['nanogpt_nats']:.4f}" if t.get("nanogpt_nats") else "",
                     f"{epochs[-1]['cpu_minutes_total']:.0f}",
                     *[f"{m:.0f}" if m is not None else "not reached" for m in reach],
                     t.get("stopped") or "in progress / interrupted"])
    out = ["Each recipe trained by `models.trainer.fit` (the pipeline's Trainer code and "
           "callbacks) on the pipeline's ExampleGen/Transform output of tiny Shakespeare; eval "
           "loss = the Evaluator's metric (nats/char over the held-out 101-character windows, "
           "from a zero state); nanoGPT = its protocol (256-character windows, all positions) "
           "at the exported epoch. CPU-minutes = the training process's CPU time, evaluation "
           "after each epoch included (2 cores: wall time is about half). What `textgen run` "
           "trains (`--preset auto`): `fast` on a CPU (in bf16 where it runs natively; the "
           "`fast_avx2` row in float32), the `default` preset on a GPU.\n",
           table(["recipe", "what", "CPU", "precision", "network", "batch / lr", "best epoch",
                  "eval nats/char", "nanoGPT protocol", "CPU-min",
                  *[f"CPU-min to ≤ {level}" for level in TARGETS], "stopped"], rows)]

    def draw(ax):
        for name, t in recipes.items():
            if t["epochs"]:
                ax.plot([e["cpu_minutes_total"] for e in t["epochs"]],
                        [e["eval_loss"] for e in t["epochs"]], "o-", label=name)
        for level in TARGETS:
            ax.axhline(level, color="grey", linestyle=":")
        ax.set_xlabel("training CPU-minutes")
        ax.set_ylabel("eval loss, nats/char")
        ax.set_ylim(top=2.2)
        ax.set_title("Time to quality, tiny Shakespeare")
        ax.legend(fontsize=7)
    out += ["", plot("time_to_quality", draw)]
    out += side_by_side(recipes)
    f32, bf16 = recipes.get("parity_float32"), recipes.get("parity_bfloat16")
    bf16_source = "`parity_bfloat16`"
    default = recipes.get("default")
    if f32 and not bf16 and default and default["precision"] == "mixed_bfloat16":
        # Over the epochs where the default run's learning rate was still constant, it is
        # the bf16 side of the parity run: same recipe, seed and data order.
        shared = default["epochs"][:len(f32["epochs"])]
        if len({e["learning_rate"] for e in shared}) == 1:
            bf16, bf16_source = {**default, "epochs": shared}, \
                f"the `default` run's first {len(shared)} epochs (constant learning rate)"
    if f32 and bf16 and f32["epochs"] and bf16["epochs"]:
        rows = [[e["epoch"], f"{e['eval_loss']:.4f}", f"{b['eval_loss']:.4f}",
                 f"{(b['eval_loss'] - e['eval_loss']) / e['eval_loss']:+.2%}",
                 f"{e['cpu_seconds'] / 60:.1f}", f"{b['cpu_seconds'] / 60:.1f}"]
                for e, b in zip(f32["epochs"], bf16["epochs"])]
        out += ["", "### bf16 parity", "",
                f"The default recipe, same seed and data order, float32 against "
                f"mixed_bfloat16 (on {bf16['machine']['cpu']}: "
                f"{bf16['machine']['vector_extensions']}); the bf16 side is {bf16_source}:\n",
                table(["epoch", "float32 eval", "mixed_bfloat16 eval", "difference",
                       "float32 CPU-min", "bf16 CPU-min"], rows)]
    return "\n".join(out) + "\n"


COMMANDS = """\
```
make bench            # 30-45 min here, as the machine drifts: sections 1-4
                      # (sets up .venv on a fresh clone)
make bench-quality    # hours: section 5; resumable (re-run it after an interruption)
python -m bench.report   # (in .venv) re-writes this file from bench/results/*.json
```
Single parts: `.venv/bin/python -m bench.training | bench.generation | bench.serving_load |
bench.serving_mixed | bench.serving_swap | bench.pipeline_cost | bench.levers |
bench.batch_throughput | bench.rnn_kernel | bench.quality [--recipes tutorial,default,...]`.
Raw numbers: `bench/results/*.json`. Data: `../shared/data/tinyshakespeare.txt`.
"""


def main():
    training, generation, serving = (common.load_result(n) for n in
                                     ("training", "generation", "serving_load"))
    pipeline_cost, quality = common.load_result("pipeline_cost"), common.load_result("quality")
    doc = "\n".join([
        "# Benchmarks",
        "",
        "Written by `bench/report.py` from the numbers in `bench/results/` (do not edit by "
        "hand; the reading of them at the end comes from `bench/NOTES.md`). Every ratio "
        "compares contenders measured side by side in one run, alternating, over several "
        "repetitions.",
        "",
        "## How to reproduce", "", COMMANDS,
        "## Machine", "", machine_section([training, generation, serving, quality]),
        "## 1. Training throughput", "", training_section(training),
        "### The recurrent kernel (`python -m bench.rnn_kernel`)", "",
        rnn_kernel.section(common.load_result(rnn_kernel.RESULTS)),
        "## 2. Generation", "", generation_section(generation),
        "## 3. Serving under load", "", serving_section(serving),
        "### Mixed traffic", "", serving_mixed.section(common.load_result("serving_mixed")),
        "### A hot swap's first request", "",
        serving_swap.section(common.load_result("serving_swap")),
        "## 4. Pipeline cost", "", pipeline_section(pipeline_cost),
        "## 5. Time to quality (`make bench-quality`)", "", time_to_quality_section(quality),
        "### The presets as they ship, beside the tutorial's recipe", "",
        levers.shipped_section(common.load_result(levers.RESULTS),
                               (quality or {}).get("recipes") or {}),
        "### Levers through `textgen run` (`python -m bench.levers`)", "",
        levers.section(common.load_result(levers.RESULTS)),
        "## 6. Model quality: earlier tries", "", quality_section(quality),
    ])
    notes = os.path.join(common.REPO, "bench", "NOTES.md")
    if os.path.exists(notes):
        with open(notes, encoding="utf-8") as f:
            doc += "\n## What the numbers say\n\n" + f.read()
    with open(DOC, "w", encoding="utf-8") as f:
        f.write(doc)
    print(f"wrote {DOC}")


if __name__ == "__main__":
    main()
