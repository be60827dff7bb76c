"""Data-parallel runs for real: the same QLoRA steps in N processes, DDP averaging their gradients.

    result = measure_data_parallel(cfg.replace(num_gpus=2), steps=3)   # N = cfg.num_gpus processes
    result["ranks"]           # each rank's measured dict (saved activations, resident, peaks, step and sync time)
    result["measured"]        # rank 0's, with the effective batch's loss and tokens/s, and extra ranks_summary

Each rank is a process started by `torch.multiprocessing.start_processes` (so a notebook can start them: the target
is this module's `_rank_main`; see `start_method` for how), joins the default process group (NCCL on CUDA, one GPU
per rank; gloo on a CPU, where the run is labelled "cpu-processes": a stand-in that shows the arithmetic and the
synchronisation for real, never GPU figures), loads the whole 4-bit base, and runs `runner.measure_run` with a
`rank_context.DataParallelRank`. 2 ranks × mb 2 × accum 2 = 8 sequences an optimizer step, as 1 × mb 4 × accum 2.

A rank that fails (an error, an OOM) writes its result, then exits non-zero; torch's ProcessContext.join then
terminates the others (SIGTERM, then SIGKILL) and the run is a record with status "error"/"oom" naming the rank.
A rank stuck in a collective gives up after the process group's timeout (`timeout_s`), so nothing hangs.
"""
from __future__ import annotations

import ast
import datetime
import json
import os
import socket
import sys
import tempfile

import torch

from labkit.config import RunConfig
from labkit.engine import notices
from labkit.record import Measured, json_default

CPU_LABEL = "cpu-processes"
DEFAULT_TIMEOUT_S = 300          # a collective waiting longer than this fails the rank (process group timeout)


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity: a container's or taskset's limit), not the machine's count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:                 # macOS, Windows
        return os.cpu_count() or 1


def check_world(num_gpus: int, device_type: str) -> None:
    """Refuse, in one line (ValueError), N CUDA processes on a machine with fewer than N visible GPUs, and N CPU
    processes on fewer than N usable CPUs (each loads the whole model and gets at least one core)."""
    if device_type == "cuda" and torch.cuda.device_count() < num_gpus:
        raise ValueError(f"num_gpus={num_gpus} needs {num_gpus} GPUs and torch sees {torch.cuda.device_count()} "
                         "here; lower --num-gpus (or run on a CPU, where N gloo processes stand in, labelled "
                         "cpu-processes)")
    if device_type == "cpu" and usable_cpus() < num_gpus:
        raise ValueError(f"num_gpus={num_gpus} on a CPU starts {num_gpus} processes, each with the whole model and "
                         f"a core of its own, and this process may use {usable_cpus()} CPUs; lower --num-gpus")


def free_port() -> int:
    """A TCP port nobody listens on now, for the rendezvous on 127.0.0.1 (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_method(device_type: str) -> str:
    """How the ranks start. On a Linux machine without a GPU (CI, a laptop): forked from a server process that
    imported the engine's libraries once (multiprocessing's "forkserver", preloading `rank_imports`), so a rank starts
    in a fraction of a second where a new interpreter imports torch, transformers and peft again (~10 s each on 2
    busy cores). The server stays, idle, until this process ends, and serves the next run's ranks too (and any other
    forkserver pool this process starts later: the preload is multiprocessing's one setting). Everywhere else
    "spawn", a new interpreter per rank: with a GPU visible, importing bitsandbytes starts CUDA in the server, and a
    process must not fork once CUDA has started (so a CPU run on Colab's T4 spawns too); macOS frameworks are not
    fork-safe; Windows has no fork."""
    import multiprocessing

    if device_type == "cuda" or sys.platform != "linux" or torch.cuda.is_available():
        return "spawn"
    multiprocessing.get_context("forkserver").set_forkserver_preload(["labkit.engine.rank_imports"])
    return "forkserver"


class _ParentFd:
    """One of this process's file descriptors (1: stdout, 2: stderr), handed to a rank as it starts: each rank's
    process is pickled on its own, and multiprocessing duplicates the descriptor into that process (what it does
    for its own pipes); the rank receives a descriptor number."""

    def __init__(self, fd: int):
        self.fd = fd

    def __reduce__(self):
        from multiprocessing.reduction import DupFd      # must run while multiprocessing pickles the process

        return _received_fd, (DupFd(self.fd),)


def _received_fd(dup) -> int:
    return dup.detach()


def _rank_main(rank: int, world_size: int, cfg: RunConfig, steps: int, warmup: int, device_type: str,
               weights: str, port: int, out_dir: str, timeout_s: float, fail_rank: int | None,
               adapters_path: str | None, notes: tuple, environ: dict, outputs: tuple | None) -> None:
    """One rank: join the group, run the measured steps, write the result to `out_dir/rank{r}.json`; exit 1 when
    the run failed, so the parent stops the other ranks at once. Its stdout and stderr are the parent's at the
    start of this run (a command line's JSON, a notebook's cell; a forked rank would otherwise write where its
    server's went when the first run started it): a calm note goes where the parent's notes go, from rank 0 only.
    Its os.environ is the parent's too; what a library read from the environment when the server imported it stays
    as it was then."""
    if outputs is not None:                # forked from the server: write where the parent writes now
        sys.stdout.flush()
        sys.stderr.flush()
        for received, fd in zip(outputs, (1, 2)):
            os.dup2(received, fd)
            os.close(received)
    os.environ.clear()
    os.environ.update(environ)

    import torch.distributed as dist

    from labkit.engine import notices, runner
    from labkit.engine.rank_context import DataParallelRank

    stream, said = notes
    notices.take_over(stream if rank == 0 else "off", said)

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(max(1, usable_cpus() // world_size))    # 2 ranks on 16 cores: 8 threads each
    device = f"cuda:{rank}" if device_type == "cuda" else "cpu"
    if device_type == "cuda":
        torch.cuda.set_device(rank)
    if rank == fail_rank:                  # tests only: this rank raises in its second forward (see tests)
        _inject_failure(runner)
    dist.init_process_group("nccl" if device_type == "cuda" else "gloo", rank=rank, world_size=world_size,
                            timeout=datetime.timedelta(seconds=timeout_s))
    result = None
    try:
        result = runner.measure_run(cfg, steps, warmup, device, weights,
                                    ranks=DataParallelRank(rank, world_size, device), adapters_path=adapters_path)
        path = os.path.join(out_dir, f"rank{rank}.json")
        with open(path + ".tmp", "w", encoding="utf-8") as f:          # whole or absent: a kill mid-write
            json.dump(result, f, default=json_default)                    # leaves no half file
        os.replace(path + ".tmp", path)
    finally:
        if result is not None and result["status"] == "ok":
            dist.destroy_process_group()     # a failed rank leaves without it: its peers may sit in a collective
    if result["status"] != "ok":
        sys.exit(1)


def unguarded_script_line() -> int | None:
    """The line of the running script (python script.py) whose top-level code led here, when it is not under
    `if __name__ == "__main__":`; None in a notebook, an interactive session, `python -c`, or a guarded script."""
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if not path or not str(path).endswith(".py") or not os.path.isfile(path):
        return None
    spec_name = getattr(getattr(main, "__spec__", None), "name", "") or ""
    if spec_name.endswith("__main__"):          # `python -m package`: spawn does not import it again
        return None
    frame = sys._getframe(1)
    while frame is not None and not (frame.f_code.co_name == "<module>"
                                     and frame.f_globals.get("__name__") == "__main__"):
        frame = frame.f_back
    if frame is None or not _same_file(frame.f_code.co_filename, path):   # python -i, exec'd code: not the script
        return None
    try:
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read())
    except (OSError, ValueError, SyntaxError, RecursionError):
        return None
    line = frame.f_lineno
    for node in ast.walk(tree):              # a guard anywhere (inside a try or a with), tested alone or in an `and`
        if isinstance(node, ast.If) and any(_is_main_test(t) for t in ast.walk(node.test)) \
                and node.lineno <= line <= node.end_lineno:
            return None
    return line


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _is_main_test(test) -> bool:
    """`__name__ == "__main__"` (either way round)."""
    if not (isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.ops[0], ast.Eq)):
        return False
    sides = [test.left, test.comparators[0]]
    return (any(isinstance(x, ast.Name) and x.id == "__name__" for x in sides)
            and any(isinstance(x, ast.Constant) and x.value == "__main__" for x in sides))


def _inject_failure(runner) -> None:
    real = runner.forward_backward
    calls = []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            print("injecting a failure in the second forward (a test)", file=sys.stderr, flush=True)
            raise RuntimeError("injected failure in the forward (a test)")
        return real(*args, **kwargs)
    runner.forward_backward = failing


def measure_data_parallel(cfg: RunConfig, steps: int = 3, warmup: int = 1, device: str | None = None,
                          weights: str = "auto", timeout_s: float = DEFAULT_TIMEOUT_S,
                          adapters_path: str | None = None, _fail_rank: int | None = None) -> dict:
    """cfg.num_gpus processes, each one rank of a DDP run; the measured half of one record (see the module).
    ValueError (one line) for more CUDA ranks than visible GPUs. `adapters_path`: rank 0 saves its adapters
    and first-step gradients there (`runner.measure_run`). `_fail_rank`: tests only, that rank raises."""
    from torch.multiprocessing import ProcessExitedException, ProcessRaisedException, start_processes

    from labkit.engine.device import run_setup
    from labkit.engine.hardware import hand_back_cached_gpu_memory, t4_profile_active
    from labkit.engine.models import model_source
    from labkit.config import check_steps

    world = cfg.num_gpus
    check_steps(steps, warmup)                                    # bad input: one ValueError, nothing spawned
    line = unguarded_script_line()
    if line is not None:
        raise ValueError(f"{sys.modules['__main__'].__file__}, line {line}: a data-parallel run started from a "
                         "script's top level: each rank is a new Python process that imports the script again "
                         "(spawn, forkserver), so put the call under `if __name__ == \"__main__\":`")
    device, dev, precision, labels = run_setup(cfg, device)      # bad precision here → ValueError before spawning
    check_world(world, dev["type"])
    if t4_profile_active():
        raise ValueError("the T4 profile caps the memory of this process only; the ranks of a data-parallel run "
                         "are new processes and would run uncapped: use --num-gpus 1 with --t4-profile")
    model_source(cfg, weights)            # build a shape-only checkpoint once here, not N times at once there
    hand_back_cached_gpu_memory()         # rank 0 shares GPU 0 with this process: leave it what this one caches
    with tempfile.TemporaryDirectory(prefix="labkit-ranks-") as out_dir:
        method = start_method(dev["type"])
        outputs = (_ParentFd(1), _ParentFd(2)) if method == "forkserver" else None   # spawned: inherited
        context = start_processes(_rank_main, nprocs=world, join=False, start_method=method,
                                  args=(world, cfg, steps, warmup, dev["type"], weights, free_port(), out_dir,
                                        timeout_s, _fail_rank, adapters_path, notices.handover(), dict(os.environ),
                                        outputs))
        failure = None
        try:
            while not context.join(grace_period=5):
                pass
        except (ProcessRaisedException, ProcessExitedException) as e:   # a rank raised before its run began,
            # or exited / was killed
            failure = e
        finally:
            for p in context.processes:             # nothing outlives the run, whatever happened here
                if p.is_alive():
                    p.kill()
                p.join()
        results = [_read(out_dir, r) for r in range(world)]
    return combine(results, failure, dev, precision)


def _read(out_dir: str, rank: int) -> dict | None:
    path = os.path.join(out_dir, f"rank{rank}.json")
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except ValueError:                                  # cannot happen with os.replace; never a crash if it does
        return None


def _rank_measured(rank: int, result: dict | None, killed: str | None = None) -> dict:
    if result is None:
        why = killed or "stopped: another rank failed first"
        return {"rank": rank, "status": "error" if killed else "stopped", "error": why}
    return {**result["measured"], "rank": rank, "status": result["status"], "error": result["error"],
            "traceback": result.get("traceback")}


def _killed(failure: BaseException | None, results: list) -> tuple[int | None, str | None]:
    """(rank, why) when a rank was ended by a signal before writing anything (e.g. the system out of memory
    killed it while it loaded the model), or raised before its run began; else (None, None)."""
    from torch.multiprocessing import ProcessExitedException, ProcessRaisedException

    index = getattr(failure, "error_index", None)
    if index is None or results[index] is not None:
        return None, None
    if isinstance(failure, ProcessExitedException) and failure.signal_name:
        hint = " (on a CPU, often the system running out of memory)" if failure.signal_name == "SIGKILL" else ""
        return index, f"the process was killed by {failure.signal_name}{hint}"
    if isinstance(failure, ProcessRaisedException):
        lines = [x for x in str(failure).splitlines() if x.strip()]
        return index, f"failed before its run began: {lines[-1].strip() if lines else 'no message'}"
    return index, f"the process exited with code {getattr(failure, 'exit_code', '?')} before writing a result"


def summary(ranks: list[dict]) -> dict:
    """min / max across ranks of step time, sync time, its share of the step, saved activations and CUDA peaks
    (None where no rank measured it)."""
    def spread(key):
        values = [r[key] for r in ranks if r.get(key) is not None]
        return {"min": min(values), "max": max(values)} if values else None
    shares = [{"sync_share": r["sync_time_s"] / r["step_time_s"]} for r in ranks
              if r.get("sync_time_s") is not None and r.get("step_time_s")]
    out = {k: spread(k) for k in ("step_time_s", "sync_time_s", "saved_activation_bytes",
                                  "peak_allocated_bytes", "peak_reserved_bytes")}
    out["sync_share"] = {"min": min(s["sync_share"] for s in shares),
                         "max": max(s["sync_share"] for s in shares)} if shares else None
    return out


def combine(results: list[dict | None], failure: BaseException | None, dev: dict,
            precision: str | None = None) -> dict:
    """The ranks' results as one measured half: rank 0's measurements on top, with the effective batch's
    tokens/s (every rank's tokens ÷ the slowest rank's step time: the step ends when the last rank's
    all-reduce does), every rank in `ranks`, every rank's labels, and the first rank to fail as the status (its
    peers fail after it, with gloo's "connection closed by peer", or are stopped). A rank killed before it wrote
    anything is named as the cause."""
    from labkit.engine.runner import empty_measured

    world = len(results)
    killed_rank, killed_why = _killed(failure, results)
    ranks = [_rank_measured(r, res, killed_why if r == killed_rank else None) for r, res in enumerate(results)]
    failed = sorted((r for r in ranks if r["status"] not in ("ok", "stopped")),     # the first to fail first:
                    key=lambda r: (results[r["rank"]] or {}).get("failed_at", 0.0))   # a killed rank before all
    base = next((res for res in results if res is not None), None)
    if base is None:                                  # no rank got as far as writing: the process exit tells
        base = {"resolved": {"precision": precision, "device": dev["type"]}, "device": dev, "labels": [],
                "warnings": [], "model_source": None, "measured": empty_measured()}
    out = {**base, "labels": list(dict.fromkeys(x for res in [base] + results if res for x in res["labels"])),
           "measured": Measured.from_dict((results[0] or base)["measured"])}     # rank 0's, typed
    out.pop("failed_at", None)
    if dev["type"] == "cpu":
        out["labels"].append(CPU_LABEL)
    m = out["measured"]
    for key in ("rank", "world_size"):
        m.pop(key, None)
    out["ranks"] = ranks
    if failed or failure is not None or any(res is None for res in results):
        first = failed[0] if failed else None
        out["status"] = first["status"] if first else "error"
        why = first["error"] if first else str(failure).strip().splitlines()[-1] if failure else "no result"
        which = first["rank"] if first else getattr(failure, "error_index", "?")
        out["error"] = f"rank {which} of {world}: {why}"
        out["traceback"] = (first or {}).get("traceback")
        return out
    out["status"], out["error"] = "ok", None
    out.pop("traceback", None)
    slowest = max(r["step_time_s"] for r in ranks)
    m["tokens_per_s"] = sum(r["tokens_per_s"] * r["step_time_s"] for r in ranks) / slowest
    m["ranks_summary"] = summary(ranks)
    return out
