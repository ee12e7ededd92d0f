"""Model quality on tiny Shakespeare (`make bench-quality`): the tutorial model, and tries
to beat it, each trained until its eval loss stops improving. Resumable.

Data: the pipeline's own ExampleGen and Transform output (windows of 101 characters, the
last 10% of the file held out, as nanoGPT and char-rnn report), made once by a `textgen
run` into bench/out/quality/pipeline_root. Model: `models.model.build_model`, trained by
a loop of one-epoch `fit`s so that every epoch ends in a checkpoint (weights, optimizer,
learning rate, history); a killed run resumes at its last completed epoch.

Eval loss, per epoch: mean NLL per held-out character over the eval windows (context
0-100 characters, what the pipeline's Evaluator computes). For each try's best epoch
also the "streamed" loss: the held-out text cut into 32 long streams with the state
carried (context up to ~3,500 characters, closer to nanoGPT's 256-character blocks).
"""
import argparse
import glob
import json
import math
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from typing import Dict, List, Optional

from bench import common

QUALITY_DIR = os.path.join(common.OUT_DIR, "quality")
RESULTS = "quality"  # bench/results/quality.json, committed: the report reads it


@dataclass(frozen=True)
class Try:
    name: str
    what: str
    rnn_units: int = 1024
    rnn_layers: int = 1
    cell: str = "gru"
    dropout: float = 0.0
    learning_rate: float = 1e-3
    # When eval loss does not improve, multiply the learning rate by this (1 = constant).
    plateau_factor: float = 1.0
    # Epochs without a lower eval loss before the try stops (None: --patience).
    patience: Optional[int] = None


# In the order they run; the first is the tutorial's model and training.
TRIES = [
    Try("tutorial", "the tutorial's model: GRU 1024, Adam 1e-3, no dropout"),
    Try("dropout", "GRU 1024, dropout 0.3 before the output layer", dropout=0.3),
    Try("dropout_lr_plateau", "GRU 1024, dropout 0.3, learning rate x0.3 on a plateau",
        dropout=0.3, plateau_factor=0.3, patience=3),
    Try("lstm", "LSTM 1024, dropout 0.3 (vs the GRU above)", cell="lstm", dropout=0.3),
    Try("two_layers", "2 x GRU 768, dropout 0.3 between layers and before the output",
        rnn_units=768, rnn_layers=2, dropout=0.3),
]
# A try whose setting differs from an earlier one's only in what happens after a plateau
# (learning-rate schedule, patience) runs epoch for epoch like it until that one stops at its
# first plateau: it takes over those epochs and the checkpoint instead of re-running hours.
TAKES_OVER = {"dropout_lr_plateau": "dropout"}
BATCH, EMBEDDING = 64, 256
STREAMS = 32


def textgen(*args):
    return [os.path.join(os.path.dirname(sys.executable), "textgen"), *args]


def prepare_data(root: str) -> Dict[str, str]:
    """ExampleGen + Transform output for tiny Shakespeare via one small `textgen run`."""
    from bench.training import transform_output
    try:
        transform_output(root)
    except (RuntimeError, FileNotFoundError):
        shutil.rmtree(root, ignore_errors=True)
        cmd = textgen("run", "--data", common.SHAKESPEARE, "--pipeline-root", root,
                      "--serving-dir", os.path.join(QUALITY_DIR, "serving"), "--seq-length", "100",
                      "--eval-fraction", "0.1", "--epochs", "1", "--steps-per-epoch", "1",
                      "--eval-steps", "1", "--rnn-units", "32", "--embedding-dim", "8",
                      "--sample-chars", "0")
        print("preparing the data: " + " ".join(cmd[1:]), flush=True)
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return {"command": "textgen run --data tinyshakespeare.txt --seq-length 100 "
                       "--eval-fraction 0.1 (ExampleGen + Transform output only)"}


class Data:
    def __init__(self, root: str):
        import tensorflow as tf
        from bench.training import transform_output
        from components import text_records
        from models import features
        self.tft_output, self.examples_uri = transform_output(root)
        self.vocab = [t.decode("utf-8") for t in
                      self.tft_output.vocabulary_by_name(features.VOCAB_NAME)]
        self.vocab_size = len(self.vocab) + features.NUM_RESERVED_IDS
        with open(common.SHAKESPEARE, "rb") as f:
            text = text_records.decode(f.read(), common.SHAKESPEARE)
        # The same cut as the ExampleGen's: text[:cut] trains, text[cut:] is held out.
        cut = int(round(len(text) * 0.9))
        self.train_text, self.eval_text = text[:cut], text[cut:]
        index = {c: i + features.NUM_RESERVED_IDS for i, c in enumerate(self.vocab)}
        self.eval_ids = tf.constant([index.get(c, features.UNK_ID) for c in self.eval_text],
                                    tf.int64)

    def dataset(self, split: str, seed: int):
        from bench.training import _Accessor
        from models import model as char_model
        files = glob.glob(os.path.join(self.examples_uri, f"Split-{split}", "*"))
        return char_model.input_fn(files, _Accessor(),
                                   self.tft_output.transformed_metadata.schema, BATCH,
                                   shuffle=split == "train", repeat=False, seed=seed)


def streamed_loss(model, eval_ids, streams: int = STREAMS) -> float:
    """Mean NLL per character over the held-out text cut into `streams` contiguous pieces,
    each read from its start with the state carried through it."""
    import tensorflow as tf
    from models import model as char_model
    length = (int(eval_ids.shape[0]) // streams)
    ids = tf.reshape(eval_ids[:length * streams], [streams, length])
    inputs, targets = char_model.to_inputs_and_targets(ids)
    nll, mask = char_model.masked_nll(targets, model(inputs, training=False))
    return float(tf.reduce_sum(nll) / tf.reduce_sum(mask))


class Run:
    """One try's state on disk: history, learning rate, best epoch, checkpoints."""

    def __init__(self, spec: Try):
        self.spec = spec
        self.dir = os.path.join(QUALITY_DIR, spec.name)
        self.state_path = os.path.join(self.dir, "state.json")
        self.state = {"try": asdict(spec), "epochs": [], "learning_rate": spec.learning_rate,
                      "best_epoch": None, "done": False, "stopped": None}
        if os.path.exists(self.state_path):
            with open(self.state_path, encoding="utf-8") as f:
                saved = json.load(f)
            if saved["try"] != asdict(spec):
                raise SystemExit(f"{self.state_path} was made by a different setting of try "
                                 f"{spec.name!r}: delete {self.dir} to start that try afresh")
            self.state = saved

    def save(self):
        os.makedirs(self.dir, exist_ok=True)
        tmp = self.state_path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(self.state, f, indent=1)
        os.replace(tmp, self.state_path)

    @property
    def best_eval(self) -> float:
        return min((e["eval_loss"] for e in self.state["epochs"]), default=math.inf)


def take_over(run: Run, parent: Run, patience: int):
    """Start `run` from `parent`'s finished epochs and last checkpoint, after replaying
    `run`'s own schedule over them to check that it would have run them identically."""
    spec = run.spec
    differs = {k for k, v in asdict(parent.spec).items()
               if asdict(spec)[k] != v} - {"name", "what", "plateau_factor", "patience"}
    if differs:
        raise SystemExit(f"try {spec.name!r} cannot take over {parent.spec.name!r}'s epochs: "
                         f"they differ in {sorted(differs)}")
    if not parent.state["done"]:
        raise SystemExit(f"try {spec.name!r} takes over {parent.spec.name!r}'s epochs: train "
                         f"that first (--tries {parent.spec.name},{spec.name})")
    learning_rate, best, since_best = spec.learning_rate, math.inf, 0
    for e in parent.state["epochs"]:
        if since_best >= patience:
            raise SystemExit(f"try {spec.name!r} would have stopped before "
                             f"{parent.spec.name!r}'s epoch {e['epoch']}: delete "
                             f"{spec.name} from TAKES_OVER to train it on its own")
        if not math.isclose(e["learning_rate"], learning_rate):
            raise SystemExit(f"{parent.spec.name!r} ran epoch {e['epoch']} at learning rate "
                             f"{e['learning_rate']}, try {spec.name!r} would use "
                             f"{learning_rate}: delete {spec.name} from TAKES_OVER")
        if e["eval_loss"] < best:
            best, since_best = e["eval_loss"], 0
        else:
            since_best += 1
            learning_rate *= spec.plateau_factor
    os.makedirs(run.dir, exist_ok=True)
    for path in glob.glob(os.path.join(parent.dir, "last.*")) + [
            os.path.join(parent.dir, "best.weights.h5")]:
        shutil.copy2(path, run.dir)
    run.state.update(epochs=[dict(e) for e in parent.state["epochs"]],
                     best_epoch=parent.state["best_epoch"], learning_rate=learning_rate,
                     took_over={"try": parent.spec.name,
                                "epochs": len(parent.state["epochs"])})
    run.save()
    print(f"{spec.name}: took over {parent.spec.name}'s {len(parent.state['epochs'])} "
          f"epochs; learning rate now {learning_rate:g}", flush=True)


def train_try(spec: Try, data: Data, max_epochs: int, patience: int,
              on_epoch=lambda state: None) -> Dict:
    import tensorflow as tf
    import tf_keras
    from models import model as char_model

    run = Run(spec)
    patience = spec.patience or patience
    if run.state["done"]:
        print(f"{spec.name}: done earlier ({run.state['stopped']})", flush=True)
        return run.state
    if not run.state["epochs"] and spec.name in TAKES_OVER:
        take_over(run, Run(next(t for t in TRIES if t.name == TAKES_OVER[spec.name])),
                  patience)
    os.makedirs(run.dir, exist_ok=True)
    tf_keras.utils.set_random_seed(0)
    model = char_model.compile_model(
        char_model.build_model(data.vocab_size, EMBEDDING, spec.rnn_units, spec.rnn_layers,
                               spec.cell, spec.dropout), spec.learning_rate)
    run.state["params"] = int(model.count_params())
    checkpoint = tf.train.Checkpoint(model=model, optimizer=model.optimizer)
    last = os.path.join(run.dir, "last")
    if run.state["epochs"]:
        checkpoint.read(last).expect_partial()
        print(f"{spec.name}: resuming after epoch {len(run.state['epochs'])}", flush=True)
    while True:
        epoch = len(run.state["epochs"]) + 1
        since_best = epoch - 1 - (run.state["best_epoch"] or 0)
        if since_best >= patience or epoch > max_epochs:
            run.state["stopped"] = (f"eval loss did not improve for {patience} "
                                    f"epoch{'' if patience == 1 else 's'}"
                                    if since_best >= patience else f"reached {max_epochs} epochs")
            break
        model.optimizer.learning_rate.assign(run.state["learning_rate"])
        cpu0, wall0 = time.process_time(), time.perf_counter()
        history = model.fit(data.dataset("train", seed=epoch), epochs=1, verbose=0)
        train_loss = float(history.history["loss"][-1])
        wall_train = time.perf_counter() - wall0
        # Character-weighted: the perplexity metric sums NLL and characters in float64.
        eval_loss = math.log(model.evaluate(data.dataset("eval", seed=0), verbose=0,
                                            return_dict=True)["perplexity"])
        record = {"epoch": epoch, "train_loss": train_loss, "eval_loss": eval_loss,
                  "learning_rate": run.state["learning_rate"],
                  "cpu_seconds": time.process_time() - cpu0,
                  "train_wall_seconds": wall_train}
        improved = eval_loss < run.best_eval
        run.state["epochs"].append(record)
        if improved:
            run.state["best_epoch"] = epoch
            model.save_weights(os.path.join(run.dir, "best.weights.h5"))
        elif spec.plateau_factor != 1.0:
            run.state["learning_rate"] *= spec.plateau_factor
        checkpoint.write(last)
        run.save()
        on_epoch(run.state)
        print(f"{spec.name} epoch {epoch}: train {train_loss:.4f}, eval {eval_loss:.4f} "
              f"nats/char{' (best)' if improved else ''}, {record['cpu_seconds'] / 60:.1f} "
              f"CPU-min", flush=True)
    model.load_weights(os.path.join(run.dir, "best.weights.h5"))
    run.state["streamed_eval_loss"] = streamed_loss(model, data.eval_ids)
    run.state["done"] = True
    run.save()
    return run.state


def summarize(state: Dict) -> Dict:
    best = state["epochs"][state["best_epoch"] - 1] if state.get("best_epoch") else None
    out = {"try": state["try"], "epochs": state["epochs"], "done": state["done"],
           "stopped": state["stopped"], "params": state.get("params"),
           "took_over": state.get("took_over"),
           "cpu_hours": sum(e["cpu_seconds"] for e in state["epochs"]) / 3600}
    if best:
        nats = best["eval_loss"]
        out.update(best_epoch=best["epoch"], best_eval_loss=nats, bits=nats / math.log(2),
                   perplexity=math.exp(nats), train_loss_at_best=best["train_loss"],
                   streamed_eval_loss=state.get("streamed_eval_loss"))
    return out


def export_best(spec: Try, data: Data, export_dir: str) -> str:
    from models import export, model as char_model
    model = char_model.build_model(data.vocab_size, EMBEDDING, spec.rnn_units, spec.rnn_layers,
                                   spec.cell, spec.dropout)
    model.load_weights(os.path.join(QUALITY_DIR, spec.name, "best.weights.h5"))
    shutil.rmtree(export_dir, ignore_errors=True)
    export.save(model, data.vocab, "stream", export_dir)
    return export_dir


def main(argv: Optional[List[str]] = None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tries", default=",".join(t.name for t in TRIES),
                        help="comma-separated, in order (default: all)")
    parser.add_argument("--max-epochs", type=int, default=30)
    # One epoch is ~13 CPU-minutes here and the held-out loss (111k characters) moves by
    # far more than its noise once a model overfits: one worse epoch is a reliable stop.
    parser.add_argument("--patience", type=int, default=1,
                        help="stop a try after this many epochs without a lower eval loss "
                             "(default 1; tries with a learning-rate schedule set their own)")
    parser.add_argument("--no-text-quality", action="store_true",
                        help="skip sampling the best model (generated-text measures)")
    parser.add_argument("--text-quality-only", action="store_true",
                        help="train nothing: sample the best epoch any try has reached so far")
    args = parser.parse_args(argv)
    by_name = {t.name: t for t in TRIES}
    unknown = [n for n in args.tries.split(",") if n not in by_name]
    if unknown:
        parser.error(f"--tries: unknown {unknown}; known: {', '.join(by_name)}")

    root = os.path.join(QUALITY_DIR, "pipeline_root")
    prepared = prepare_data(root)
    data = Data(root)
    results = common.load_result(RESULTS) or {}
    results.update(machine=common.machine(), data=prepared,
                   eval_chars=len(data.eval_text), train_chars=len(data.train_text),
                   vocab_size=data.vocab_size, batch=BATCH, max_epochs=args.max_epochs,
                   patience=args.patience, tries=results.get("tries", {}))

    def record(state):
        results["tries"][state["try"]["name"]] = summarize(state)
        common.save_result(RESULTS, results)

    # Whatever earlier (maybe interrupted) runs left on disk is reported as it stands.
    for spec in TRIES:
        run = Run(spec)
        if run.state["epochs"]:
            record(run.state)
    if not args.text_quality_only:
        for name in args.tries.split(","):
            record(train_try(by_name[name], data, args.max_epochs, args.patience, record))

    if not args.no_text_quality:
        from bench import text_quality
        measured = [t for t in results["tries"].values() if "best_eval_loss" in t]
        if not measured:
            raise SystemExit("no try has finished an epoch yet: nothing to sample from")
        best = min(measured, key=lambda t: t["best_eval_loss"])
        export_dir = export_best(by_name[best["try"]["name"]], data,
                                 os.path.join(QUALITY_DIR, "best_export"))
        results["text_quality"] = {
            "model": best["try"]["name"], "model_done": best["done"],
            "model_epoch": best["best_epoch"],
            **text_quality.measure(export_dir, data.train_text, data.eval_text)}
        common.save_result(RESULTS, results)
    return results


if __name__ == "__main__":
    main()
