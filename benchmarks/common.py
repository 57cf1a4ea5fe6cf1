"""Shared measurement helpers for the benchmark scripts (not a script itself).

- The repository root goes first on ``sys.path`` (and on ``PYTHONPATH`` for workers), so the code
  measured is this checkout's ``ccnet``, not another installed copy.
- ``wait_until_quiet``: never time while a training run announces itself (the files in ``$CCNET_PAUSE_FILE``,
  ``:``-separated; default ``runs/TRAINING_RUNNING`` in this checkout) and wait for the other processes' CPU
  use to drop.
- ``measure_peak_mb``: peak memory of one call, CUDA allocator statistics on CUDA, otherwise the
  process's peak resident set size (Linux ``VmHWM``, reset through ``/proc/self/clear_refs``).
- ``time_interleaved``: methods timed in alternating rounds in one process, so that a burst of
  load from other processes hits all of them; the minimum and the median are reported.
"""

from __future__ import annotations

import ctypes
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import torch  # noqa: E402  (after the path set-up on purpose)

# A training run on this machine announces itself with this file (`touch runs/TRAINING_RUNNING`); nothing is
# timed while it exists. Relative paths in $CCNET_PAUSE_FILE are taken from the repository root.
PAUSE_DEFAULT = "runs/TRAINING_RUNNING"
PAUSE_FILES = [REPO_ROOT / p for p in os.environ.get("CCNET_PAUSE_FILE", PAUSE_DEFAULT).split(":") if p]
DOCS = REPO_ROOT / "docs"


# -------------------------------------------------------------------------------------------------
# The machine and its load
# -------------------------------------------------------------------------------------------------


def describe_machine(device: str = "cpu") -> str:
    """One line naming the machine: CPU model with the flags that matter and cores (or GPU), threads, torch
    version. The flags tell apart CPUs that share a model name ("AMD EPYC" is a Zen 3 without AVX-512 on one
    machine, a Zen 5 with avx512_bf16 on another), named as the training probes name them."""
    from training.precision import describe_machine as cpu_with_flags

    if device == "cuda":
        return f"{torch.cuda.get_device_name()}, torch {torch.__version__}"
    return (
        f"{cpu_with_flags('cpu')}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, "
        f"torch {torch.__version__}, {platform.system()} {platform.machine()}"
    )


def cpu_flags() -> str:
    """The instruction-set flags that decide our kernels' speed (AVX-512, bfloat16, AMX): "avx2 yes, ..."."""
    from training.precision import cpu_flags as flags_of_this_cpu

    flags = flags_of_this_cpu()
    if not flags:
        return "unknown"
    wanted = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
    return ", ".join(f"{flag} {'yes' if flag in flags else 'no'}" for flag in wanted)


def cpu_busy_fraction(seconds: float = 2.0) -> float:
    """Fraction of all CPUs busy over ``seconds`` (from /proc/stat), 0 where unavailable."""

    def sample():
        fields = [int(n) for n in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
        return sum(fields), fields[3] + fields[4]  # total, idle + iowait

    try:
        total0, idle0 = sample()
        time.sleep(seconds)
        total1, idle1 = sample()
    except OSError:
        return 0.0
    return 1.0 - (idle1 - idle0) / max(total1 - total0, 1)


def training_running() -> bool:
    return any(path.exists() for path in PAUSE_FILES)


def wait_until_quiet(max_busy: float = 0.2, timeout_s: float = 1800.0, log=print) -> float:
    """Block until no training run is flagged and other processes use < max_busy of the CPUs.

    Returns the busy fraction seen last. Raises TimeoutError after timeout_s (never times anything
    while a training run is flagged).
    """
    global _last_busy
    deadline = time.monotonic() + timeout_s
    said = False
    while True:
        busy = 1.0 if training_running() else cpu_busy_fraction()
        if busy < max_busy:
            _last_busy = busy
            return busy
        if time.monotonic() > deadline:
            raise TimeoutError(f"machine not quiet after {timeout_s:.0f} s (busy {busy:.0%}); not timing")
        if not said:
            reason = "a training run is flagged" if training_running() else f"CPU {busy:.0%} busy"
            log(f"waiting for a quiet machine ({reason}) ...")
            said = True
        time.sleep(10)


_last_busy: float | None = None


def load_note() -> str:
    """How loaded the machine was: CPU use just before the last timing, and the load average now."""
    one, five, _ = os.getloadavg()
    before = f"CPUs {_last_busy:.0%} busy just before timing, " if _last_busy is not None else ""
    return f"{before}load average {one:.2f} (1 min) / {five:.2f} (5 min) counting the benchmark itself"


# -------------------------------------------------------------------------------------------------
# Peak memory
# -------------------------------------------------------------------------------------------------


def _proc_status_mb(key: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024  # kB -> MiB
    raise KeyError(key)


def _release_free_memory() -> None:
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand freed heap pages back so RSS is live memory
    except OSError:
        pass


def _reset_peak_rss() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        return True
    except OSError:
        return False


MEMORY_METHOD_CPU = (
    "CPU: peak resident set size of a fresh process during one call (Linux VmHWM after resetting "
    "it through /proc/self/clear_refs and releasing free heap with malloc_trim), minus the resident "
    "size just before the call, after one warm-up call"
)
MEMORY_METHOD_CUDA = "CUDA: torch.cuda.max_memory_allocated during one call minus memory allocated before it"


MEMORY_METHOD_ALLOCATOR = (
    "allocator peak: the largest sum of live tensor bytes during one call, from the PyTorch "
    "profiler's allocation records (profile_memory=True), over what was live before it; the CPU "
    "analogue of CUDA's max_memory_allocated, blind to the C library's heap caching"
)


def measure_peak_allocated_mb(call: Callable[[], object]) -> float:
    """Peak of live tensor bytes (MiB) allocated by ``call()`` beyond those live before it."""
    from torch._C._profiler import _EventType
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        call()
    events, stack = [], list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        event = stack.pop()
        stack.extend(event.children)
        if event.tag == _EventType.Allocation:
            events.append(event)
    live = peak = 0
    for event in sorted(events, key=lambda e: e.start_time_ns):
        live += event.extra_fields.alloc_size  # negative for a free
        peak = max(peak, live)
    return peak / 2**20


def measure_peak_mb(call: Callable[[], object], device: str = "cpu") -> float:
    """Peak memory increment (MiB) of ``call()`` over what is allocated before it."""
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        call()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - before) / 2**20
    _release_free_memory()
    if not _reset_peak_rss():
        raise RuntimeError("cannot reset the peak RSS (/proc/self/clear_refs): Linux only")
    before = _proc_status_mb("VmRSS")
    call()
    return _proc_status_mb("VmHWM") - before


# -------------------------------------------------------------------------------------------------
# Timing
# -------------------------------------------------------------------------------------------------


def time_interleaved(calls: dict[str, Callable[[], object]], rounds: int, device="cpu", warmup=1):
    """Seconds per call for each named call, timed in alternating rounds: {name: {min, median, all}}."""
    for call in calls.values():
        for _ in range(warmup):
            call()
    samples: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            samples[name].append(time_once(call, device))
    return {name: summarize(times) for name, times in samples.items()}


def time_once(call, device: str = "cpu") -> float:
    """Seconds one call takes (the device synchronised around it)."""
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    call()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def p90(values: list[float]) -> float:
    """The 90th percentile as the benchmarks' tables report it: the value at rank round(0.9 (n - 1))."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(0.9 * (len(ordered) - 1))))]


def format_or_dash(value, spec: str) -> str:
    """A table cell: `value` formatted with `spec`, or "-" where it was not measured (None)."""
    return "-" if value is None else format(value, spec)


def summarize(times: list[float]) -> dict:
    return {"min": min(times), "median": statistics.median(times), "all": times}


# -------------------------------------------------------------------------------------------------
# Fresh-process workers
# -------------------------------------------------------------------------------------------------


def run_worker(script: Path, spec: dict, timeout_s: float = 1800.0) -> dict:
    """Run ``script --worker SPEC`` in a fresh interpreter; return the JSON its last line prints."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]))
    cmd = [sys.executable, str(script), "--worker", json.dumps(spec)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout_s:.0f} s"}
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines()
        return {"error": lines[-1] if lines else f"exit code {done.returncode}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def worker_or_table_main(args, worker: Callable[[dict], dict], run: Callable, format_table: Callable) -> None:
    """The entry point of a benchmark that measures in fresh workers: with ``--worker SPEC`` be one (print its
    JSON), otherwise run them all and print the table (progress on stderr)."""
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    print(format_table(run(args, log=lambda message: print(message, file=sys.stderr))))


def parse_size(text: str) -> tuple[int, int]:
    """'97x97' -> (97, 97)."""
    h, w = (int(n) for n in text.lower().split("x"))
    return h, w
