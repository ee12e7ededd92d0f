"""The network's and its training's settings: each default defined here, once.

Beside the model as nanoGPT keeps GPTConfig beside GPT; `pipeline/configs.py` imports
these. No TensorFlow here, so the command line validates settings in milliseconds.
The defaults are the recipe measured to reach the best eval loss within a 2-core CPU's
half hour (docs/benchmarks.md, "Time to quality"); `pipeline/presets/` holds the others.
"""
import dataclasses
from typing import Optional

CELLS = ("gru", "lstm")
# "auto": mixed_bfloat16 where oneDNN runs bf16 natively, mixed_float16 on GPUs with
# float16 tensor cores, float32 elsewhere (models/precision.py decides and says why).
PRECISIONS = ("auto", "float32", "mixed_bfloat16", "mixed_float16")
# plateau: cut the learning rate when the eval loss stalls (the run decides its length);
# cosine: decay it to near zero over `train.epochs` (a run whose length is its budget).
LR_SCHEDULES = ("plateau", "cosine")


@dataclasses.dataclass
class ModelSettings:
    embedding_dim: int = 256
    rnn_units: int = 1024
    rnn_layers: int = 1
    cell: str = "lstm"  # gru or lstm
    dropout: float = 0.3  # between layers and before the output; never recurrent (cuDNN)


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
    seed: int = 42
    # Start from the weights of the newest model in the serving directory (the latest
    # blessed one) when it has the same characters and shape; otherwise start fresh.
    warm_start: bool = True
    precision: str = "auto"
