"""One run (or one batch-size search) in a fresh Python process, through the kit's own command line.

    record = fresh.run(RunConfig(model="llama-3.2-1b", seq_len=512), steps=2, t4_profile=True, weights="random")

Why a fresh process, when `experiment.run` works in this one:
- the CUDA caching allocator reads `PYTORCH_CUDA_ALLOC_CONF` once, when CUDA starts in a process; a notebook
  kernel that has already touched the GPU can no longer switch `expandable_segments` on or off;
- a new process starts with no cached blocks, no CUDA context of earlier runs and no tensors left behind, so its
  peaks belong to this run alone;
- the T4 profile (`--t4-profile`) caps one process; the caller stays uncapped.

The child is `python -m labkit run --json …` with the same interpreter; its one JSON line is the record, the same
schema `experiment.run` returns. The environment change (the allocator setting) is made in the child's environment
only, never in this process's `os.environ`.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

from labkit.flags import argv_for
from labkit.config import RunConfig
from labkit.record import RunRecord, as_record

ALLOC_CONF_VARS = ("PYTORCH_CUDA_ALLOC_CONF", "PYTORCH_ALLOC_CONF")   # torch ≥ 2.9 reads the second name too


def run_command(cfg: RunConfig, steps: int, warmup: int | None = None, weights: str = "auto",
                t4_profile: bool = False, python: str | None = None) -> list[str]:
    """The argv of `labkit run --json` for `cfg` (only the flags that differ from RunConfig's defaults)."""
    argv = [python or sys.executable, "-m", "labkit", "run", "--json", "--steps", str(steps), "--weights", weights]
    if warmup is not None:
        argv += ["--warmup", str(warmup)]
    if t4_profile:
        argv.append("--t4-profile")
    return argv + argv_for(cfg)


def search_command(cfg: RunConfig, lo: int = 1, hi: int = 64, weights: str = "auto", t4_profile: bool = False,
                   python: str | None = None) -> list[str]:
    """The argv of `labkit search --json` for `cfg`."""
    argv = [python or sys.executable, "-m", "labkit", "search", "--json", "--min", str(lo), "--max", str(hi),
            "--weights", weights]
    if t4_profile:
        argv.append("--t4-profile")
    return argv + argv_for(cfg)


def child_env(alloc_conf: str | None = None, base: dict | None = None) -> dict:
    """The child's environment: this one (or `base`) with the allocator setting replaced by `alloc_conf`
    (None: unset, the allocator's defaults), whatever this process has."""
    env = dict(os.environ if base is None else base)
    for name in ALLOC_CONF_VARS:
        env.pop(name, None)
    if alloc_conf:
        env["PYTORCH_CUDA_ALLOC_CONF"] = alloc_conf
    return env


def parse_output(stdout: str) -> dict:
    """The last JSON object the child printed: one line (`run --json`) or indented over several (`doctor --json`);
    anything a library printed before it is skipped."""
    lines = stdout.splitlines()
    for i in reversed(range(len(lines))):
        if lines[i].startswith("{"):
            try:
                return json.loads("\n".join(lines[i:]))
            except json.JSONDecodeError:
                continue
    raise ValueError("the child printed no JSON record")


def call(argv: list[str], env: dict | None = None, timeout: float = 900) -> dict:
    """Run one `labkit … --json` child and return what it printed. ValueError when the child refused its input
    (exit 2, its one-line message); RuntimeError when it printed no record (a crash: the tail of its stderr)."""
    from labkit.engine.hardware import hand_back_cached_gpu_memory

    hand_back_cached_gpu_memory()        # the child's GPU memory must not sit in this process's cache
    done = subprocess.run(argv, env=env if env is not None else child_env(), capture_output=True, text=True,
                          timeout=timeout)
    err = done.stderr.strip().splitlines()
    if done.returncode == 2:
        raise ValueError(err[-1] if err else f"{' '.join(argv[2:5])}: exit 2")
    try:
        return parse_output(done.stdout)
    except ValueError:
        tail = " | ".join(err[-5:]) or "no output"
        raise RuntimeError(f"`{' '.join(argv[1:5])} …` exited {done.returncode} without a record: {tail}") from None


def run(cfg: RunConfig, steps: int = 3, warmup: int | None = None, weights: str = "auto", t4_profile: bool = False,
        alloc_conf: str | None = None, timeout: float = 900) -> RunRecord:
    """`experiment.run` in a fresh process: the record (status ok, oom or error) that `labkit run --json` prints,
    typed as `labkit.run` returns it."""
    return as_record(call(run_command(cfg, steps, warmup, weights, t4_profile), child_env(alloc_conf), timeout))


def search(cfg: RunConfig, lo: int = 1, hi: int = 64, weights: str = "auto", t4_profile: bool = False,
           timeout: float = 900) -> dict:
    """`batch_search.largest_micro_batch` in a fresh process: {"best", "trail", "labels", …}."""
    return call(search_command(cfg, lo, hi, weights, t4_profile), child_env(), timeout)


def shell_line(argv: list[str], alloc_conf: str | None = None) -> str:
    """The command as one would type it: `PYTORCH_CUDA_ALLOC_CONF=… python -m labkit run …`."""
    words = ["python"] + argv[1:]
    prefix = f"PYTORCH_CUDA_ALLOC_CONF={alloc_conf} " if alloc_conf else ""
    return prefix + " ".join(words)
