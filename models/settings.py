"""The network's, its training's and its sampling's settings: each default and each
sampling rule defined here, once.

Beside the model as nanoGPT keeps GPTConfig beside GPT; `pipeline/configs.py` imports
these. No TensorFlow here, so the command line validates settings in milliseconds.
The defaults are the recipe measured to reach the best eval loss within about a CPU-hour
where training runs in bf16 (docs/benchmarks.md, "Time to quality"); `pipeline/presets/`
holds the others, among them `fast`, what `make run` trains on a CPU.
"""
import dataclasses
import math
import numbers
from typing import Any, Optional, Tuple

CELLS = ("gru", "lstm")
# "auto": mixed_bfloat16 where oneDNN runs bf16 natively, mixed_float16 on GPUs with
# float16 tensor cores, float32 elsewhere (models/precision.py decides and says why).
PRECISIONS = ("auto", "float32", "mixed_bfloat16", "mixed_float16")
# plateau: cut the learning rate when the eval loss stalls (the run decides its length);
# cosine: decay it to near zero over `train.epochs` (a run whose length is its budget);
# cosine_budget: the same over the epochs `train.max_cpu_minutes` holds on this machine (as
# projected after each epoch from its CPU time), at most `train.epochs`: the decay ends with
# the run on a CPU slow or fast per epoch alike.
LR_SCHEDULES = ("plateau", "cosine", "cosine_budget")


@dataclasses.dataclass
class ModelSettings:
    embedding_dim: int = 256
    rnn_units: int = 1024
    rnn_layers: int = 1
    cell: str = "lstm"  # gru or lstm
    dropout: float = 0.3  # between layers and before the output; never recurrent (cuDNN)
    # DropConnect on each RNN layer's hidden-to-hidden matrix, one mask a training step
    # (AWD-LSTM's weight drop; models/weight_drop.py); 0: off. One replica only.
    weight_drop: float = 0.0


@dataclasses.dataclass
class TrainSettings:
    epochs: int = 30  # a maximum: early stopping usually ends the run before
    steps_per_epoch: Optional[int] = None  # None: one full pass over the train split
    eval_steps: Optional[int] = None  # None: the whole eval split after each epoch
    batch_size: int = 64
    learning_rate: float = 2e-3
    # Adam's global gradient-norm clip (0: off): keeps an early large step at a high
    # learning rate from throwing the RNN's weights far off.
    clipnorm: float = 1.0
    # Decoupled weight decay (AdamW; 0: plain Adam): each step shrinks the weight matrices
    # by learning_rate × weight_decay of themselves. Biases are never decayed.
    weight_decay: float = 0.0
    # Evaluate and export an exponential moving average of the weights (Keras' optimizer
    # EMA; 0: off) rather than the last step's: each step moves the average this much
    # less than all the way to the new weights, which smooths the noise of a high rate.
    ema_momentum: float = 0.0
    # Stop after this many epochs without a lower eval loss (0: run all `epochs`); the
    # weights exported are always those of the lowest-eval-loss epoch.
    patience: int = 2
    # A training CPU-time budget (0: none): stop before an epoch that would take the
    # training past it, judged by the last epoch's CPU time; epochs before a resume count.
    # CPU time rather than wall time, so a budget means the same on a host shared or not.
    max_cpu_minutes: float = 0.0
    lr_schedule: str = "plateau"
    # plateau (ReduceLROnPlateau): after `lr_patience` epochs without a lower eval loss
    # multiply the learning rate by `lr_factor` (1.0: a constant learning rate).
    lr_factor: float = 0.3
    lr_patience: int = 1
    # cosine and cosine_budget: over the run's last this-many epochs (of `epochs`, or of
    # fewer as the CPU budget projects them) the rate falls further, linearly towards zero
    # (1/(n+1) of the schedule's rate in the last); 0: off. A cosine over more epochs than
    # the budget holds keeps the rate high while the network still learns fast, and ends it
    # high: this anneals the end alone.
    cooldown_epochs: int = 0
    seed: int = 42
    # Start from the weights of the newest model in the serving directory (the latest
    # blessed one) when it has the same characters and shape; otherwise start fresh.
    warm_start: bool = True
    precision: str = "auto"
    # Truncated back-propagation through carried state (stream mode, one replica): the
    # train split as batch_size contiguous streams, the RNN's last state after each batch
    # the first state of the next, zeroed as each epoch starts (models/carry.py).
    # Evaluation still reads each record from a zero state.
    carry_state: bool = False
    # Windows cut anew each epoch from a random offset: the same text with new window
    # boundaries, so a character is not always read at the same distance from its window's
    # zero state (models/corpus_text.py). Stream mode without carry_state only: a line is
    # read whole, and carried state's streams are the text in order; there it does nothing.
    shift_windows: bool = False


# What the Trainer reads (train_input): the Transform's records, shuffled; the train split as
# contiguous streams with the state carried (models/carry.py); or the train split cut into
# windows anew each epoch (models/corpus_text.py).
RECORDS, CARRIED_STATE, SHIFTED_WINDOWS = "records", "carried state", "windows cut anew each epoch"


def train_input(train: TrainSettings, mode: str) -> str:
    """The input a run trains from, decided here once for the Trainer and the run's recipe
    line. Both text inputs need stream mode, whose records are slices of one text (a line is
    read whole); carried state wins over shifted windows, whose cuts would break its streams."""
    if mode != "stream":
        return RECORDS
    if train.carry_state:
        return CARRIED_STATE
    return SHIFTED_WINDOWS if train.shift_windows else RECORDS


@dataclasses.dataclass(frozen=True)
class SamplingSettings:
    """How text is drawn when the caller does not say: `textgen generate`, the client
    library (serving/client.py) and the run summary's sample."""
    prompt: str = "ROMEO:"  # the tutorial's; `textgen generate --prompt`, the run's sample
    num_chars: int = 1000  # `textgen generate --num-chars`
    temperature: float = 0.8
    top_k: int = 0  # 0: off
    top_p: float = 1.0  # 1: off
    seed: int = 0  # 0: a random seed per request


DEFAULT_SAMPLING = SamplingSettings()


@dataclasses.dataclass(frozen=True)
class SamplingRule:
    """What one sampling parameter must be, in numbers and in words.

    A value is at least `low` (greater than it when `low_open`), at most `high` when there
    is one, and finite. `text` says so for every message: the command line's ("--top-p 0.0:
    give a number in (0, 1] (1 = off)"), the server's pre-checks ("top_p is 1.5 in row 0: it
    must be ...") and the graph's own checks ("top_p must be ..."), which TF Serving's users
    reach directly.
    """
    text: str
    low: float
    high: Optional[float] = None
    low_open: bool = False

    def holds(self, value) -> bool:
        if not isinstance(value, numbers.Integral) and not math.isfinite(value):
            return False
        if value < self.low or (self.low_open and value == self.low):
            return False
        return self.high is None or value <= self.high


# Each sampling parameter's rule, defined here once (the generation signatures' inputs).
SAMPLING_RULES = {
    "num_chars": SamplingRule("a number >= 0", 0),
    "temperature": SamplingRule("a finite number >= 0 (0 = greedy)", 0.0),
    "top_k": SamplingRule("a number >= 0 (0 = off)", 0),
    "top_p": SamplingRule("a number in (0, 1] (1 = off)", 0.0, 1.0, low_open=True),
    # The signatures' seed input is an int32.
    "seed": SamplingRule("a 32-bit integer (0 = random)", -2**31, 2**31 - 1),
}


def broken_sampling_rule(**values) -> Optional[Tuple[str, Any, SamplingRule]]:
    """The first of the given sampling parameters (name=value) that breaks its rule, as
    (name, value, rule); None when all keep theirs. Callers word the message around
    rule.text, each in its own way."""
    for name, value in values.items():
        rule = SAMPLING_RULES[name]
        if not rule.holds(value):
            return name, value, rule
    return None
