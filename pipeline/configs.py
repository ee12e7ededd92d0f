"""Every setting of a textgen run, in one config object.

Precedence: built-in defaults < config file (TOML or YAML) < command-line flags.
This module imports no TensorFlow, so the CLI can validate settings in milliseconds.
"""
import dataclasses
import importlib.resources
import json
import os
import tomllib
from typing import Any, Dict, Iterable, List, Optional, Tuple

from components import text_records
from models import precision
from models.settings import CELLS, LR_SCHEDULES, PRECISIONS, ModelSettings, TrainSettings

# The tutorial's corpus, downloaded (and cached) when no --data is given.
SHAKESPEARE_URL = "https://storage.googleapis.com/download.tensorflow.org/data/shakespeare.txt"


ENCODING_ERRORS = ("strict", "replace")  # Python's codec error handlers we accept
MODES = text_records.MODES


class ConfigError(ValueError):
    """A setting is invalid; the message names it and says what to do."""


@dataclasses.dataclass
class DataSettings:
    path: Optional[str] = None  # file, directory, glob or URL; None = the tutorial's corpus
    mode: str = "stream"  # stream: fixed-length windows; lines: one record per line
    seq_length: int = 100  # stream mode: characters of input per record (records hold seq_length+1)
    eval_fraction: float = 0.1  # the last fraction of each file is held out, contiguous
    encoding_errors: str = "strict"  # strict: refuse non-UTF-8 input; replace: use U+FFFD
    # With a {SPAN} pattern: read the latest span and the spans before it, this many in
    # all (1 = the latest span only). Spans are immutable once written (TFX's convention).
    span_count: int = 1


@dataclasses.dataclass
class EvalSettings:
    # Blessing needs perplexity <= max_perplexity; None means "better than guessing
    # uniformly over the vocabulary", which any trained model should clear.
    max_perplexity: Optional[float] = None
    # ...and no regression against the latest blessed model beyond this relative amount.
    max_regression: float = 0.01


@dataclasses.dataclass
class InfraSettings:
    """Before a push, the candidate is served by `textgen serve` in a process of its own
    and every signature queried (components/infra_validator.py): one that does not load
    or answer within `timeout` seconds, or is slower than the bound, is not pushed."""
    # Characters of the `generate` request whose latency is measured (median of three).
    generate_chars: int = 100
    # Milliseconds that `generate` may take at most; None: measured, not bounded.
    max_latency_ms: Optional[float] = None
    timeout: float = 300.0


@dataclasses.dataclass
class RunSettings:
    pipeline_name: str = "textgen"
    pipeline_root: str = "tfx_root"
    serving_dir: str = "serving_model"
    beam_args: List[str] = dataclasses.field(default_factory=list)
    sample_chars: int = 300
    # Another run holding the pipeline root's lock: wait this long for it, then give up.
    # 0 = give up at once (a scheduled run skips a tick rather than piling up).
    lock_timeout: float = 0.0
    # Airflow's schedule_interval (a cron expression or a preset such as @daily).
    schedule: str = "@daily"


@dataclasses.dataclass
class MetadataSettings:
    """ML Metadata: SQLite under the pipeline root, or a shared MySQL/MariaDB database."""
    backend: str = "sqlite"  # sqlite or mysql
    sqlite_path: Optional[str] = None  # None: <pipeline_root>/metadata.sqlite
    mysql_host: str = "127.0.0.1"
    mysql_port: int = 3306
    mysql_database: str = "textgen_mlmd"
    mysql_user: str = "textgen"
    mysql_password: str = ""
    # Name of an environment variable holding the password (keeps it out of the file);
    # used when that variable is set.
    mysql_password_env: str = "TEXTGEN_MLMD_PASSWORD"
    mysql_socket: Optional[str] = None  # a Unix socket instead of host:port


@dataclasses.dataclass
class VertexSettings:
    """What `textgen compile --target vertex` puts into the KFP v2 definition."""
    # The container every component runs in: the pipeline image (deploy/Dockerfile) as
    # pushed to a registry the project can pull from. No default: TFX's stock image cannot
    # import this project's executors and run_fn.
    image: Optional[str] = None
    trainer_gpus: int = 0
    trainer_gpu_type: str = "NVIDIA_TESLA_T4"
    trainer_cpu: float = 4.0
    trainer_memory_gb: float = 16.0


@dataclasses.dataclass
class Config:
    data: DataSettings = dataclasses.field(default_factory=DataSettings)
    model: ModelSettings = dataclasses.field(default_factory=ModelSettings)
    train: TrainSettings = dataclasses.field(default_factory=TrainSettings)
    eval: EvalSettings = dataclasses.field(default_factory=EvalSettings)
    infra: InfraSettings = dataclasses.field(default_factory=InfraSettings)
    run: RunSettings = dataclasses.field(default_factory=RunSettings)
    metadata: MetadataSettings = dataclasses.field(default_factory=MetadataSettings)
    vertex: VertexSettings = dataclasses.field(default_factory=VertexSettings)

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, values: Dict[str, Any], source: str = "config") -> "Config":
        config = cls()
        config.update(values, source)
        return config

    def update(self, values: Dict[str, Any], source: str = "config") -> None:
        """Overrides settings from a nested dict {section: {name: value}}."""
        sections = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        for section_name, section_values in values.items():
            if section_name not in sections:
                raise ConfigError(
                    f"{source}: unknown section [{section_name}]; "
                    f"expected one of {', '.join(sections)}")
            if not isinstance(section_values, dict):
                raise ConfigError(f"{source}: [{section_name}] must be a table of settings")
            section = sections[section_name]
            known = {f.name for f in dataclasses.fields(section)}
            for name, value in section_values.items():
                if name not in known:
                    raise ConfigError(
                        f"{source}: unknown setting {section_name}.{name}; "
                        f"expected one of {', '.join(sorted(known))}")
                setattr(section, name, value)

    def validate(self) -> "Config":
        """Raises ConfigError naming the first bad setting."""
        d, m, t, e = self.data, self.model, self.train, self.eval
        _check(d.mode in MODES, "data.mode", d.mode, f"must be {_one_of(MODES)}")
        _check(d.encoding_errors in ENCODING_ERRORS, "data.encoding_errors",
               d.encoding_errors, f"must be {_one_of(ENCODING_ERRORS)}")
        _positive_int("data.seq_length (--seq-length)", d.seq_length)
        _check(_is_number(d.eval_fraction) and 0 < d.eval_fraction < 1,
               "data.eval_fraction (--eval-fraction)", d.eval_fraction, "must be between 0 and 1")
        _positive_int("model.embedding_dim (--embedding-dim)", m.embedding_dim)
        _positive_int("model.rnn_units (--rnn-units)", m.rnn_units)
        _positive_int("model.rnn_layers (--rnn-layers)", m.rnn_layers)
        _check(m.cell in CELLS, "model.cell (--cell)", m.cell, f"must be {_one_of(CELLS)}")
        _check(_is_number(m.dropout) and 0 <= m.dropout < 1, "model.dropout (--dropout)",
               m.dropout, "must be in [0, 1)")
        _check(_is_number(m.weight_drop) and 0 <= m.weight_drop < 1,
               "model.weight_drop (--weight-drop)", m.weight_drop, "must be in [0, 1) (0: off)")
        _positive_int("train.epochs (--epochs)", t.epochs)
        if t.steps_per_epoch is not None:
            _positive_int("train.steps_per_epoch (--steps-per-epoch)", t.steps_per_epoch)
        if t.eval_steps is not None:
            _positive_int("train.eval_steps (--eval-steps)", t.eval_steps)
        _positive_int("train.batch_size (--batch-size)", t.batch_size)
        _check(_is_number(t.learning_rate) and t.learning_rate > 0,
               "train.learning_rate (--learning-rate)", t.learning_rate, "must be > 0")
        _check(isinstance(t.seed, int), "train.seed", t.seed, "must be an integer")
        _check(_is_number(t.clipnorm) and t.clipnorm >= 0, "train.clipnorm (--clipnorm)",
               t.clipnorm, "must be >= 0 (0: no clipping)")
        _check(_is_number(t.weight_decay) and t.weight_decay >= 0,
               "train.weight_decay (--weight-decay)", t.weight_decay, "must be >= 0 (0: Adam)")
        _check(_is_number(t.ema_momentum) and 0 <= t.ema_momentum < 1,
               "train.ema_momentum (--ema-momentum)", t.ema_momentum,
               "must be in [0, 1) (0: no moving average)")
        _check(isinstance(t.patience, int) and t.patience >= 0, "train.patience (--patience)",
               t.patience, "must be an integer >= 0 (0: never stop early)")
        _check(_is_number(t.lr_factor) and 0 < t.lr_factor <= 1, "train.lr_factor (--lr-factor)",
               t.lr_factor, "must be in (0, 1] (1: a constant learning rate)")
        _positive_int("train.lr_patience (--lr-patience)", t.lr_patience)
        _check(_is_number(t.max_cpu_minutes) and t.max_cpu_minutes >= 0,
               "train.max_cpu_minutes (--max-cpu-minutes)", t.max_cpu_minutes,
               "must be >= 0 (0: no budget)")
        _check(t.lr_schedule in LR_SCHEDULES, "train.lr_schedule (--lr-schedule)", t.lr_schedule,
               f"must be {_one_of(LR_SCHEDULES)}")
        _check(t.lr_schedule != "cosine_budget" or t.max_cpu_minutes > 0,
               "train.lr_schedule (--lr-schedule)", t.lr_schedule,
               "decays over the epochs a CPU budget holds: set train.max_cpu_minutes "
               "(--max-cpu-minutes), or choose cosine to decay over train.epochs")
        _check(isinstance(t.cooldown_epochs, int) and t.cooldown_epochs >= 0,
               "train.cooldown_epochs (--cooldown-epochs)", t.cooldown_epochs,
               "must be an integer >= 0 (0: no cool-down)")
        _check(not t.cooldown_epochs or t.lr_schedule in ("cosine", "cosine_budget"),
               "train.cooldown_epochs (--cooldown-epochs)", t.cooldown_epochs,
               f"cools a cosine down; train.lr_schedule is {t.lr_schedule!r}: choose cosine "
               "or cosine_budget, or set it to 0")
        _check(t.precision in PRECISIONS, "train.precision (--precision)", t.precision,
               f"must be {_one_of(PRECISIONS)}")
        if e.max_perplexity is not None:
            _check(_is_number(e.max_perplexity) and e.max_perplexity >= 1,
                   "eval.max_perplexity (--max-perplexity)", e.max_perplexity,
                   "must be >= 1 (a perplexity is never below 1)")
        _check(_is_number(e.max_regression) and e.max_regression >= 0,
               "eval.max_regression (--max-regression)", e.max_regression, "must be >= 0")
        _check(isinstance(self.run.sample_chars, int) and self.run.sample_chars >= 0,
               "run.sample_chars", self.run.sample_chars, "must be >= 0")
        _positive_int("data.span_count (--span-count)", d.span_count)
        _check(isinstance(t.warm_start, bool), "train.warm_start (--warm-start)", t.warm_start,
               "must be true or false")
        infra = self.infra
        _positive_int("infra.generate_chars", infra.generate_chars)
        if infra.max_latency_ms is not None:
            _check(_is_number(infra.max_latency_ms) and infra.max_latency_ms > 0,
                   "infra.max_latency_ms (--max-latency-ms)", infra.max_latency_ms,
                   "must be > 0 milliseconds (leave it out for no bound)")
        _check(_is_number(infra.timeout) and infra.timeout > 0, "infra.timeout", infra.timeout,
               "must be > 0 seconds")
        r, md, vx = self.run, self.metadata, self.vertex
        _check(isinstance(r.beam_args, list) and all(isinstance(a, str) for a in r.beam_args),
               "run.beam_args (--beam-arg)", r.beam_args,
               'must be a list of strings such as ["--direct_num_workers=2"]')
        _check(_is_number(r.lock_timeout) and r.lock_timeout >= 0,
               "run.lock_timeout (--lock-timeout)", r.lock_timeout, "must be >= 0 seconds")
        _check("://" not in str(r.serving_dir), "run.serving_dir (--serving-dir)", r.serving_dir,
               "must be a filesystem path: the Pusher publishes a version by renaming a "
               "finished copy, which object stores cannot do atomically; mount the bucket "
               "(e.g. Cloud Storage FUSE, /gcs/BUCKET/serving on Vertex)")
        _check(isinstance(r.schedule, str) and r.schedule.strip() != "", "run.schedule",
               r.schedule, "must be a cron expression or an Airflow preset such as @daily")
        _check(md.backend in ("sqlite", "mysql"), "metadata.backend", md.backend,
               "must be 'sqlite' or 'mysql'")
        if md.backend == "mysql":
            _check(isinstance(md.mysql_port, int) and 0 < md.mysql_port < 65536,
                   "metadata.mysql_port", md.mysql_port, "must be a TCP port number")
            for name in ("mysql_host", "mysql_database", "mysql_user"):
                _check(isinstance(getattr(md, name), str) and getattr(md, name) != "",
                       f"metadata.{name}", getattr(md, name), "must be set for backend mysql")
        _check(isinstance(vx.trainer_gpus, int) and vx.trainer_gpus >= 0, "vertex.trainer_gpus",
               vx.trainer_gpus, "must be an integer >= 0")
        _check(_is_number(vx.trainer_cpu) and vx.trainer_cpu > 0, "vertex.trainer_cpu",
               vx.trainer_cpu, "must be > 0")
        _check(_is_number(vx.trainer_memory_gb) and vx.trainer_memory_gb > 0,
               "vertex.trainer_memory_gb", vx.trainer_memory_gb, "must be > 0")
        _check(isinstance(t.carry_state, bool), "train.carry_state (--carry-state)",
               t.carry_state, "must be true or false")
        if t.carry_state:
            _check(d.mode == "stream", "train.carry_state (--carry-state)", t.carry_state,
                   f"needs data.mode = 'stream': in {d.mode!r} mode each record is a text of "
                   "its own, with nothing before it to carry a state from; use --mode stream "
                   "or turn carry_state off")
            # Several GPUs mean MirroredStrategy: models/carry.py trains on one replica.
            _check(vx.trainer_gpus <= 1, "train.carry_state (--carry-state)", t.carry_state,
                   f"trains on one replica, and vertex.trainer_gpus = {vx.trainer_gpus} "
                   "would make a replica of each GPU; set vertex.trainer_gpus to 0 or 1, or "
                   "turn carry_state off")
        # As carry_state, models/weight_drop.py trains on one replica.
        _check(not m.weight_drop or vx.trainer_gpus <= 1, "model.weight_drop (--weight-drop)",
               m.weight_drop, f"trains on one replica, and vertex.trainer_gpus = "
               f"{vx.trainer_gpus} would make a replica of each GPU; set vertex.trainer_gpus "
               "to 0 or 1, or weight_drop to 0")
        _check(isinstance(t.shift_windows, bool), "train.shift_windows (--shift-windows)",
               t.shift_windows, "must be true or false")
        return self


def _one_of(choices) -> str:
    """("a", "b", "c") → "'a', 'b' or 'c'"."""
    quoted = [repr(c) for c in choices]
    return ", ".join(quoted[:-1]) + " or " + quoted[-1] if len(quoted) > 1 else quoted[0]


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value


def _check(ok: bool, name: str, value, requirement: str) -> None:
    if not ok:
        raise ConfigError(f"{name} = {value!r}: {requirement}")


def _positive_int(name: str, value) -> None:
    _check(isinstance(value, int) and not isinstance(value, bool) and value > 0, name, value,
           "must be a positive integer")


def load_file(path: str) -> Dict[str, Any]:
    """Reads a TOML (.toml) or YAML (.yaml/.yml) config file into a nested dict."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as err:
        raise ConfigError(f"config file {path}: cannot read it ({err.strerror})") from None
    ext = os.path.splitext(path)[1].lower()
    try:
        if ext == ".toml":
            return tomllib.loads(raw.decode("utf-8"))
        if ext in (".yaml", ".yml"):
            import yaml
            values = yaml.safe_load(raw) or {}
            if not isinstance(values, dict):
                raise ConfigError(f"config file {path}: expected a mapping of sections")
            return values
    except ConfigError:
        raise
    except Exception as err:  # noqa: BLE001 - any parse error becomes one clear line
        reason = " ".join(str(err).split())  # PyYAML's messages span several lines
        raise ConfigError(f"config file {path}: not valid {ext[1:].upper()}: {reason}") from None
    raise ConfigError(f"config file {path}: use a .toml, .yaml or .yml file")


def _preset_files():
    """The shipped presets' folder, pipeline/presets/, wherever the package is installed
    (a wheel in site-packages, an image, a source checkout)."""
    return importlib.resources.files("pipeline").joinpath("presets")


def presets() -> List[str]:
    """Names of the shipped presets (pipeline/presets/NAME.toml)."""
    return sorted(f.name[:-len(".toml")] for f in _preset_files().iterdir()
                  if f.name.endswith(".toml"))


# `--preset auto`: chosen for the machine that trains (choose_preset).
AUTO_PRESET = "auto"


def choose_preset(flags: Optional[Iterable[str]] = None, gpu: Optional[bool] = None,
                  onednn: Optional[bool] = None) -> Tuple[str, str]:
    """(preset, why) for `--preset auto`: the recipe this machine trains best in half an hour.

    On every CPU that is `fast` (GRU 768 under a 30 CPU-minute budget), in bf16 where the
    CPU runs it natively and in float32 elsewhere: on a 2-core AVX2-only CPU and on a 2-core
    AMX one it stopped by itself within the budget below nanoGPT's 1.45, where the default
    LSTM 1024 took 45 CPU-minutes in bf16 and 1.5x the tutorial's step in float32
    (docs/benchmarks.md, "Time to quality" and the levers). A GPU trains the default
    network. Facts can be injected, as in models/precision.py.
    """
    gpu = precision.nvidia_gpu_present() if gpu is None else gpu
    if gpu:
        return "default", "auto: a GPU trains the default network"
    policy, why = precision.choose("auto", flags, gpus=(), onednn=onednn)
    return "fast", f"{why}; a CPU trains the fast network, here in {policy}"


# Presets whose network cannot reach their level within their budget in float32, and the
# variant a CPU without native bf16 trains instead: `quality`'s 2 × LSTM 1024 took 31
# CPU-minutes an epoch in float32 on a 2-core AVX2-only EPYC, 4 epochs of its 2 CPU-hours.
FLOAT32_VARIANTS = {"quality": "quality_float32"}


def choose_variant(name: str, flags: Optional[Iterable[str]] = None,
                   gpu: Optional[bool] = None,
                   onednn: Optional[bool] = None) -> Tuple[str, str]:
    """(preset, why) for a preset named on the command line: its FLOAT32_VARIANTS variant
    where this machine trains in float32 on its CPU, the preset itself anywhere else."""
    variant = FLOAT32_VARIANTS.get(name)
    if variant is None:
        return name, "set explicitly"
    gpu = precision.nvidia_gpu_present() if gpu is None else gpu
    if gpu:
        return name, "set explicitly; a GPU trains it as written"
    policy, why = precision.choose("auto", flags, gpus=(), onednn=onednn)
    if policy != "float32":
        return name, f"set explicitly; {why.removeprefix('auto: ')}"
    return variant, (f"{name} where the CPU trains in float32: {why.removeprefix('auto: ')}; "
                     f"--preset {variant} names it anywhere")


def resolve_preset(name: str) -> Tuple[str, str]:
    """(preset, why): `auto` chosen for this machine, a preset with a float32 variant
    chosen by the CPU (choose_variant), any other name as given."""
    return choose_preset() if name == AUTO_PRESET else choose_variant(name)


def _apply_preset(config: Config, name: str, derived: Tuple[str, ...] = ()) -> None:
    """The preset's settings onto `config`; a preset with `base = "NAME"` first takes that
    preset's, so a variant lists only what it changes."""
    if name not in presets():
        raise ConfigError(f"preset {name!r}: unknown; expected one of {', '.join(presets())}")
    values = tomllib.loads(_preset_files().joinpath(name + ".toml").read_text(encoding="utf-8"))
    base = values.pop("base", None)
    if base is not None:
        _check(isinstance(base, str) and base not in (name, *derived), f"preset {name}: base",
               base, "must name another preset, and not one built on this one")
        _apply_preset(config, base, (name, *derived))
    config.update(values, source=f"preset {name}")


def load(path: Optional[str] = None, overrides: Optional[Dict[str, Any]] = None,
         preset: Optional[str] = None) -> Config:
    """Defaults, then the preset, then the file, then overrides; validated."""
    config = Config()
    if preset:
        _apply_preset(config, preset)
    if path:
        config.update(load_file(path), source=path)
    if overrides:
        config.update(overrides, source="command line")
    return config.validate()
