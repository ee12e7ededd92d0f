"""Held-out loss of an exported model on two protocols, from the raw text file.

  evaluator  the pipeline's own metric: the eval split as ExampleGen cuts it (the file's
             last eval_fraction, windows of seq_length+1 characters, each read from a
             zero state), exp(Σ NLL / Σ characters) → nats/char
  nanogpt    nanoGPT's: windows of 256 input characters from a zero state, loss over all
             256 positions (its 1.4697 on tiny Shakespeare is measured this way, on
             random windows of the same last 10%; here every window, in order)

Both go through the SavedModel's `score` signature, so any pushed version can be
measured: `python -m bench.protocols --model serving_model/3 --data FILE`.
"""
import argparse
import json
import math
from typing import Dict, List

NANOGPT_BLOCK = 256


def eval_text(path: str, eval_fraction: float = 0.1) -> str:
    from components import text_records
    with open(path, "rb") as f:
        text = text_records.decode(f.read(), path)
    return text[int(round(len(text) * (1.0 - eval_fraction))):]


def mean_nll(score, windows: List[str], batch: int = 64) -> float:
    """exp-free: Σ NLL / Σ characters (nats/char) over `windows` via the score signature."""
    import tensorflow as tf
    from models import features
    total_nll = total_chars = 0.0
    for start in range(0, len(windows), batch):
        examples = [tf.train.Example(features=tf.train.Features(feature={
            features.TEXT_KEY: tf.train.Feature(bytes_list=tf.train.BytesList(
                value=[w.encode("utf-8")]))})).SerializeToString()
            for w in windows[start:start + batch]]
        out = score(examples=tf.constant(examples))
        total_nll += float(tf.reduce_sum(tf.cast(out[features.NLL_OUTPUT], tf.float64)))
        total_chars += float(tf.reduce_sum(tf.cast(out[features.NUM_CHARS_OUTPUT], tf.float64)))
    return total_nll / total_chars


def measure(model_dir: str, text: str, seq_length: int = 100) -> Dict[str, float]:
    import tensorflow as tf
    from components import text_records
    from models import features
    score = tf.saved_model.load(model_dir).signatures[features.SCORE_SIGNATURE]
    evaluator = mean_nll(score, list(text_records.stream_records(text, seq_length)))
    nanogpt = mean_nll(score, list(text_records.stream_records(text, NANOGPT_BLOCK)))
    return {"evaluator_nats": evaluator, "evaluator_perplexity": math.exp(evaluator),
            "nanogpt_nats": nanogpt, "eval_chars": len(text)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="an exported SavedModel directory "
                        "(a version folder of the serving directory)")
    parser.add_argument("--data", required=True, help="the raw UTF-8 text file trained on")
    parser.add_argument("--eval-fraction", type=float, default=0.1)
    parser.add_argument("--seq-length", type=int, default=100)
    args = parser.parse_args(argv)
    print(json.dumps(measure(args.model, eval_text(args.data, args.eval_fraction),
                             args.seq_length), indent=1))


if __name__ == "__main__":
    main()
