"""Timing and reporting helpers shared by the benchmarks.

Every comparison alternates its contenders within each repetition, so slow drift of the
machine (other load, thermal state) hits all of them alike; reported: median and spread.
"""
import json
import os
import platform
import statistics
import threading
import time
from typing import Callable, Dict, List, Sequence

from models import precision

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT_DIR = os.path.join(REPO, "bench", "out")
DOCS_DIR = os.path.join(REPO, "docs")
# Committed: the numbers docs/benchmarks.md is written from (the long quality run's too,
# so that a quick `make bench` on a fresh clone keeps its section).
RESULTS_DIR = os.path.join(REPO, "bench", "results")
SHAKESPEARE = os.path.join(os.path.dirname(REPO), "shared", "data", "tinyshakespeare.txt")


def as_run_from_repo(command: str) -> str:
    """The command as a reader types it in the repository (results are committed from any
    clone, so absolute paths would name the machine and folder they were measured in)."""
    return command.replace(REPO + "/", "").replace(os.path.dirname(REPO) + "/", "../")


def alternate(contenders: Dict[str, Callable[[], float]],
              repetitions: int) -> Dict[str, List[float]]:
    """Runs each contender once per repetition, in turn; each returns a measured value."""
    results: Dict[str, List[float]] = {name: [] for name in contenders}
    for _ in range(repetitions):
        for name, run in contenders.items():
            results[name].append(run())
    return results


def run_clients(loops: List[Callable[[], None]], barrier, stop_at: List[float],
                seconds: float) -> float:
    """Runs the client loops in threads. Each connects, then waits at `barrier` (of
    len(loops) + 1 parties); the clock starts when all are ready and they stop sending at
    stop_at[0]. Returns the seconds from the start until the last one stopped."""
    threads = [threading.Thread(target=loop) for loop in loops]
    for thread in threads:
        thread.start()
    stop_at[0] = time.perf_counter() + seconds
    barrier.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    return time.perf_counter() - began


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def summary(values: Sequence[float]) -> Dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "n": len(values)}


def machine() -> Dict[str, str]:
    import tensorflow as tf
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"cpu": cpu, "cores": str(os.cpu_count()), "tensorflow": tf.__version__,
            "vector_extensions": vector_extensions(), "peak_gflops": peak_gflops(),
            "python": platform.python_version(),
            "onednn": "on" if precision.onednn_on(precision.cpu_flags()) else "off",
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def cpu_kind(machine: Dict) -> str:
    """What a run's figures hold for: the CPU's name and its fastest bf16 path. A lever's
    or a kernel's figures differ by CPU kind (`auto` even picks a different preset), so
    runs on two kinds are kept, and averaged, apart."""
    flags = machine["vector_extensions"].split()
    if any(f.startswith("amx") for f in flags):
        native = "AMX"
    elif "avx512_bf16" in flags:
        native = "AVX512_BF16"
    elif any(f.startswith("avx512") for f in flags):
        native = "AVX-512, no bf16"
    else:
        native = "AVX2" if "avx2" in flags else "no AVX2"
    return f"{machine['cpu']}, {native}"


def vector_extensions() -> str:
    """The CPU features that decide which kernels oneDNN can use (bf16 needs AVX-512 BF16
    or AMX to be fast)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = next((line.split(":", 1)[1].split() for line in f
                          if line.startswith("flags")), [])
    except OSError:
        return "unknown"
    wanted = [f for f in sorted(set(flags)) if f in ("avx", "avx2", "fma")
              or f.startswith("avx512") or f.startswith("amx") or f == "avx_vnni"]
    return " ".join(wanted) or "none of avx/avx2/avx512/amx"


def peak_gflops() -> float:
    """Rough float32 peak: cores × clock × 32 FLOP/cycle (two 8-wide FMA units, AVX2).

    An upper bound to compare a step's achieved FLOP rate with, not a measurement.
    """
    mhz = None
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            mhz = next((float(line.split(":", 1)[1]) for line in f
                        if line.startswith("cpu MHz")), None)
    except OSError:
        pass
    return round((os.cpu_count() or 1) * (mhz or 0) / 1000 * 32, 1)


def save_result(name: str, data: Dict) -> str:
    os.makedirs(RESULTS_DIR, exist_ok=True)
    path = os.path.join(RESULTS_DIR, f"{name}.json")
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1)
    os.replace(tmp, path)
    return path


def load_result(name: str):
    path = os.path.join(RESULTS_DIR, f"{name}.json")
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)
