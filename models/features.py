"""Feature names and constants shared by every stage (one place, no repeats).

Id layout of the character vocabulary, as seen by the model:

    0               [PAD]  padding in a batch; never a target, never sampled
    1               [UNK]  a character the vocabulary has never seen; never sampled
    2 .. V+1        the corpus' characters, most frequent first (tf.Transform's order)
"""

# Raw tf.Example feature written by the text ExampleGen: one training sequence, UTF-8.
TEXT_KEY = "text"

# Transformed feature written by Transform: the sequence as character ids (VarLen int64).
IDS_KEY = "ids"

# Where the ExampleGen cut a record: (span, file index within the span, record index within
# the file), int64 ×3, passed through by Transform. Beam shuffles the records as it writes
# them; carried state and shifted windows (models/corpus_text.py) put them back in
# corpus order by it.
POSITION_KEY = "position"

# Name of the tf.Transform vocabulary asset (stored as tfrecord_gzip, because the
# text format silently drops tokens that contain "\n" or "\r").
VOCAB_NAME = "chars"

PAD_TOKEN = "[PAD]"
UNK_TOKEN = "[UNK]"
PAD_ID = 0
UNK_ID = 1
NUM_RESERVED_IDS = 2

# Line mode: every record ends with this terminator, so the model learns where a line ends.
LINE_TERMINATOR = "\n"

# Signature names; clients, benchmarks and TF Serving configs rely on them.
ONE_STEP_SIGNATURE = "serving_default"
GENERATE_SIGNATURE = "generate"
# `generate` in pieces: from a state, a number of characters, the state after them. What
# `textgen serve` steps concurrent requests with, and how a TF Serving client cuts a long
# request into chunks.
RESUME_SIGNATURE = "resume"
SCORE_SIGNATURE = "score"

# In the Trainer's model_run dir, read back by the run summary (pipeline/summary.py):
# the training's record (epochs, where and why it stopped, which epoch was exported, the
# precision), and whether training started from the latest blessed model and why (not).
TRAINING_REPORT = "training.json"
WARM_START_REPORT = "warm_start.json"

# Outputs of the score signature, read by the TFMA perplexity metric.
NLL_OUTPUT = "nll"
NUM_CHARS_OUTPUT = "num_chars"
