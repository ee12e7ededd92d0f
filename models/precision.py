"""`train.precision = "auto"`: the Keras mixed-precision policy this machine runs fastest.

bf16 pays only where oneDNN has native bf16 kernels (AVX512_BF16 or AMX-BF16: about 2×
float32 there); on AVX2-only CPUs it is emulated and slower than float32. GPUs from
compute capability 7.0 (Volta) have float16 tensor cores. Every choice is made from
facts passed in, so tests can inject any machine.
"""
import os
from typing import Iterable, Optional, Sequence, Tuple

NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
# Where TensorFlow turns oneDNN on by itself when TF_ENABLE_ONEDNN_OPTS is unset
# (DefaultOneDnnPolicy in tensorflow/core/util/util.cc, TF 2.16).
ONEDNN_DEFAULT_FLAGS = ("avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile", "amx_int8",
                        "amx_bf16")
MIN_FLOAT16_CAPABILITY = (7, 0)


def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> Tuple[str, ...]:
    """The CPU's feature flags as the kernel reports them (empty where unknown)."""
    try:
        with open(cpuinfo, encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    return tuple(line.split(":", 1)[1].split())
    except OSError:
        pass
    return ()


def gpu_capabilities() -> Tuple[Tuple[int, int], ...]:
    """Compute capability of each visible GPU."""
    import tensorflow as tf
    found = []
    for gpu in tf.config.list_physical_devices("GPU"):
        details = tf.config.experimental.get_device_details(gpu)
        found.append(tuple(details.get("compute_capability") or (0, 0)))
    return tuple(found)


def nvidia_gpu_present(driver_dir: str = "/proc/driver/nvidia/gpus") -> bool:
    """Whether NVIDIA's driver lists a GPU this process may use, without importing
    TensorFlow (the command line decides the preset before anything heavy is loaded).
    An empty or -1 CUDA_VISIBLE_DEVICES hides the GPUs, as it does from TensorFlow."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return False
    try:
        return bool(os.listdir(driver_dir))
    except OSError:
        return False


def onednn_on(flags: Iterable[str], environ=os.environ) -> bool:
    """Whether TensorFlow runs oneDNN's kernels: TF_ENABLE_ONEDNN_OPTS if set, else its
    own rule from the CPU's flags."""
    value = environ.get("TF_ENABLE_ONEDNN_OPTS")
    if value is not None:
        return value.lower() in ("1", "true")
    return any(f in ONEDNN_DEFAULT_FLAGS for f in flags)


def choose(requested: str, flags: Optional[Iterable[str]] = None,
           gpus: Optional[Sequence[Tuple[int, int]]] = None,
           onednn: Optional[bool] = None) -> Tuple[str, str]:
    """(policy, why) for `requested` ("auto" or an explicit policy name)."""
    if requested != "auto":
        return requested, f"train.precision = {requested} (set explicitly)"
    gpus = gpu_capabilities() if gpus is None else tuple(gpus)
    if gpus:
        if all(tuple(c) >= MIN_FLOAT16_CAPABILITY for c in gpus):
            return "mixed_float16", (f"auto: GPU compute capability "
                                     f"{'.'.join(map(str, min(gpus)))} has float16 tensor cores")
        return "float32", (f"auto: GPU compute capability {'.'.join(map(str, min(gpus)))} is "
                           "below 7.0, float16 would be emulated")
    flags = set(cpu_flags() if flags is None else flags)
    native = [f for f in NATIVE_BF16_FLAGS if f in flags]
    if onednn is None:
        onednn = onednn_on(flags)
    if native and onednn:
        return "mixed_bfloat16", f"auto: the CPU runs bf16 natively ({', '.join(native)})"
    if native:
        return "float32", ("auto: the CPU has native bf16 but oneDNN is off "
                           "(TF_ENABLE_ONEDNN_OPTS=0)")
    return "float32", ("auto: no GPU, and the CPU has no native bf16 (avx512_bf16 / amx_bf16); "
                       f"oneDNN {'on' if onednn else 'off'}")
