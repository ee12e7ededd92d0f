"""Generated-text quality: samples of a model's `generate` signature at several
temperatures, measured against the training text.

  words_in_training  fraction of generated words ([A-Za-z']+, lower-cased) that occur in
                     the training text: spelling, at the word level
  distinct_2/3       distinct word bigrams/trigrams over all of them, pooled over the
                     samples: repetitiveness (low = loops)
  longest_copy       the longest substring of a sample found verbatim in the training text:
                     memorisation (a few words is normal; whole lines are not)

The same measures over slices of the held-out text give the reference a real text scores.
"""
import re
import statistics
from typing import Dict, Iterable, List, Sequence

WORD = re.compile(r"[A-Za-z']+")
TEMPERATURES = (0.5, 0.8, 1.0)
SAMPLES, SAMPLE_CHARS = 10, 1000
PROMPT = "\n"


def words(text: str) -> List[str]:
    return [w.lower() for w in WORD.findall(text)]


def words_in_training(samples: Iterable[str], vocabulary: set) -> float:
    generated = [w for s in samples for w in words(s)]
    return sum(w in vocabulary for w in generated) / len(generated) if generated else 0.0


def distinct_n(samples: Iterable[str], n: int) -> float:
    """Distinct word n-grams / all word n-grams, n-grams taken within each sample."""
    grams = [tuple(ws[i:i + n]) for s in samples for ws in [words(s)]
             for i in range(len(ws) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def longest_copy(sample: str, source: str) -> str:
    """The longest substring of `sample` that occurs in `source`.

    Two pointers: if sample[i:j] occurs, so does sample[i+1:j], so j never moves back and
    the search costs O(len(sample)) substring lookups.
    """
    best, j = "", 0
    for i in range(len(sample)):
        j = max(j, i)
        while j < len(sample) and sample[i:j + 1] in source:
            j += 1
        if j - i > len(best):
            best = sample[i:j]
    return best


def score(samples: Sequence[str], train_text: str, vocabulary: set) -> Dict:
    copies = [longest_copy(s, train_text) for s in samples]
    longest = max(copies, key=len)
    return {"words_in_training": words_in_training(samples, vocabulary),
            "distinct_2": distinct_n(samples, 2), "distinct_3": distinct_n(samples, 3),
            "longest_copy_chars": len(longest),
            "median_longest_copy_chars": statistics.median(len(c) for c in copies),
            "longest_copy": longest}


def measure(export_dir: str, train_text: str, eval_text: str) -> Dict:
    import tensorflow as tf
    generate = tf.saved_model.load(export_dir).signatures["generate"]
    vocabulary = set(words(train_text))
    out = {"samples": SAMPLES, "sample_chars": SAMPLE_CHARS, "prompt": PROMPT,
           "temperatures": {}}
    for temperature in TEMPERATURES:
        # One seed per row: a row's draws depend on its own seed only.
        result = generate(prompts=tf.constant([PROMPT] * SAMPLES),
                          num_chars=tf.fill([SAMPLES], SAMPLE_CHARS),
                          temperature=tf.fill([SAMPLES], temperature),
                          top_k=tf.fill([SAMPLES], 0), top_p=tf.fill([SAMPLES], 1.0),
                          seed=tf.range(1, SAMPLES + 1))
        samples = [c.decode("utf-8") for c in result["completion"].numpy()]
        out["temperatures"][str(temperature)] = {**score(samples, train_text, vocabulary),
                                                 "example": samples[0][:400]}
    step = len(eval_text) // SAMPLES
    held_out = [eval_text[i * step:i * step + SAMPLE_CHARS] for i in range(SAMPLES)]
    out["held_out_text"] = score(held_out, train_text, vocabulary)
    return out
