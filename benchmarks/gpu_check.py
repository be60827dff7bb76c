"""Every GPU claim of the kit, checked in one run on a machine with a CUDA GPU.

    python benchmarks/gpu_check.py                 # all sections; meant to take ≤ 8 minutes on an H100/H200
    python benchmarks/gpu_check.py --quick         # fewer configs, lesson 06 only
    python benchmarks/gpu_check.py --out runs/gpu-check-h200 --only bc     # chosen sections, chosen folder

(The time is an estimate from the sizes involved: the script has not yet been timed on a GPU. Each section prints
how long it took.)

Sections (each prints a table and writes DIR/<section>.jsonl, one JSON object a line):
  a  the OOM scene, in this process under the T4 profile: a run that fits, one that runs out of memory, the first
     again; allocated and reserved bytes after each stage (a failed run must leave nothing allocated)
  b  the largest micro-batch under the T4 profile (llama-3.2-1b, checkpointing on, seq 512 and 2048): what
     `labkit search` finds, best and best + 1 each run alone in a fresh process, and the theory's largest fit
     (checked: best fits alone, best + 1 does not, and the search is within 1 of the theory)
  c  peak allocated, theory vs measured: tiny, llama-3.2-1b, qwen2.5-0.5b × fp16/fp32 × checkpointing on/off,
     each run in a fresh process under the T4 profile
  d  lessons 03 and 06 executed with nbclient on this GPU (pass/fail and time; the executed copies are saved)
  e  `pytest -m gpu tests/test_gpu.py`
  f  the time theory on this GPU: `labkit calibrate --force` (the CUDA probes), then llama-3.2-1b at seq 512 in
     fresh processes — micro-batch 1/2/4/8, checkpointing off, fp32 — measured step time vs theory.time (with the
     constants just calibrated), and each toggle's delta (checked: step within 25 %, deltas within 15 points)

"T4-profile" means this GPU with each process capped at a Colab T4's 14.75 GiB (`labkit.engine.hardware.t4_profile`):
memory figures carry over to a T4, times do not. Section d runs the lessons as a learner would, on the whole GPU.
Hub presets use shape-only random weights (`--weights random`): memory and time are real, losses are not.

The children (`python -m labkit …`, notebook kernels, pytest) import the labkit of this checkout: its folder is put
first on PYTHONPATH. Without CUDA the script refuses in one line, exit code 2. Exit code 1 when a check failed.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MiB, GiB = 1024 ** 2, 1024 ** 3
ASSUMED_CONTEXT = GiB // 2           # a T4's CUDA context and libraries, ~0.5 GiB, come out of its 14.75 GiB
LEAK_TOLERANCE = 64 * MiB            # after an OOM, allocated must be back within this of where it was before
PEAK_GOAL_FRACTION = 0.03            # theory peak within ±3 % of the measured peak for the hub presets
PEAK_GOAL_TINY = 16 * MiB            # … and within ±16 MiB for the tiny stand-in (its peak is a few MiB)

RESULTS: list[tuple[str, bool, str]] = []     # (check, passed, one line) for the summary at the end
T4_PROFILED = True     # set in main: False where the GPU is no bigger than a T4 and the cap changes nothing


# ---- helpers -------------------------------------------------------------------------------------------------------
def mib(n) -> str:
    return "—" if n is None else f"{n / MiB:,.0f} MiB"


def table(rows, header) -> str:
    rows = [[str(c) for c in r] for r in [header] + list(rows)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
             for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def heading(letter: str, title: str, stand_in: str) -> None:
    print(f"\n== ({letter}) {title}\n   {stand_in}", flush=True)


def check(name: str, passed: bool, line: str) -> None:
    RESULTS.append((name, passed, line))
    print(f"   {'PASS' if passed else 'FAIL'}  {name}: {line}", flush=True)


def fresh_run(cfg, steps: int) -> dict:
    """`labkit run --t4-profile --json --weights random` in a fresh process. A child that dies without a record
    (a crash, a timeout) becomes a record with status "crash", so one bad config does not end the section."""
    from labkit import fresh
    try:
        return fresh.run(cfg, steps=steps, weights="random", t4_profile=True)
    except (RuntimeError, ValueError, subprocess.TimeoutExpired) as e:
        return {"config": cfg.to_dict(), "status": "crash", "error": str(e)[:300], "labels": [],
                "measured": {"peak_allocated_bytes": None}, "theory": {}}


class Writer:
    """DIR/<section>.jsonl, one row a line, flushed as it goes (a crash keeps what was measured)."""

    def __init__(self, out: Path):
        self.out = out
        out.mkdir(parents=True, exist_ok=True)

    def __call__(self, section: str, row: dict) -> None:
        with open(self.out / f"{section}.jsonl", "a", encoding="utf-8") as fh:
            fh.write(json.dumps(row, default=str) + "\n")


# ---- header --------------------------------------------------------------------------------------------------------
def header() -> dict:
    """Versions and the GPU, printed first and written to DIR/header.jsonl."""
    from importlib import metadata

    import torch

    from labkit.engine.hardware import T4_TOTAL_MEMORY

    def version(package):
        try:
            return metadata.version(package)
        except metadata.PackageNotFoundError:
            return None

    props = torch.cuda.get_device_properties(0)
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                text=True).stdout.strip()
    except OSError:                     # no git on this machine
        commit = ""
    facts = {
        "gpu": props.name, "capability": f"{props.major}.{props.minor}", "total_memory": props.total_memory,
        "t4_cap_bytes": T4_TOTAL_MEMORY, "t4_fraction": min(1.0, T4_TOTAL_MEMORY / props.total_memory),
        "python": sys.version.split()[0], "torch": torch.__version__, "cuda": torch.version.cuda,
        **{p: version(p) for p in ("transformers", "peft", "bitsandbytes", "accelerate")},
        "labkit_commit": commit or None,
        "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    print(f"GPU: {facts['gpu']} (compute capability {facts['capability']}, {facts['total_memory'] / GiB:.1f} GiB); "
          f"T4 profile = {T4_TOTAL_MEMORY / GiB:.2f} GiB cap = fraction {facts['t4_fraction']:.3f}")
    print("versions: " + ", ".join(f"{k} {facts[k]}" for k in ("python", "torch", "cuda", "transformers", "peft",
                                                              "bitsandbytes", "accelerate")))
    print(f"labkit: {ROOT} at {facts['labkit_commit'] or 'unknown commit'}")
    return facts


# ---- (a) the OOM scene ---------------------------------------------------------------------------------------------
def section_a(write, stand_in: str) -> None:
    """A fitting run, an OOM, the fitting run again, in this process under the T4 profile. The H100 records of
    2026-11-22 saw 13.57 GiB stay allocated after the OOM and every later run fail; now the OOM must leave
    allocated where it was (± 64 MiB) and the same run must fit again."""
    import gc

    import torch

    from labkit.config import RunConfig
    from labkit.experiment import run

    heading("a", "the OOM scene: fit, OOM, fit again, in one process", stand_in)
    fits = RunConfig(model="llama-3.2-1b", seq_len=1024, micro_batch=2, grad_accum=1, gradient_checkpointing=True)
    too_big = fits.replace(seq_len=2048, micro_batch=4, gradient_checkpointing=False)

    def now():
        gc.collect()
        torch.cuda.synchronize()
        return torch.cuda.memory_allocated(), torch.cuda.memory_reserved()

    rows, allocated_at = [], {}

    def stage(name, record=None):
        allocated, reserved = now()
        allocated_at[name] = allocated
        peak = record["measured"]["peak_allocated_bytes"] if record else None
        rows.append((name, record["status"] if record else "", mib(peak), mib(allocated), mib(reserved)))
        write("a_oom_scene", {"stage": name, "status": record["status"] if record else None,
                              "peak_allocated_bytes": peak, "allocated_bytes": allocated, "reserved_bytes": reserved,
                              "config": record["config"] if record else None,
                              "error": record["error"] if record else None, "t4_profile": T4_PROFILED})
        return record

    def one_step(cfg):                 # one optimizer step, no warm-up: memory is the point here, not time
        return run(cfg, steps=1, warmup=0, device="cuda", weights="random")

    after_fit, after_oom = "after llama-3.2-1b seq 1024 × 2, ckpt on", "after seq 2048 × 4, ckpt off (too big)"
    stage("start (T4 profile set)")
    first = stage(after_fit, one_step(fits))
    oom = stage(after_oom, one_step(too_big))
    torch.cuda.empty_cache()
    stage("after torch.cuda.empty_cache()")
    again = stage("after seq 1024 × 2, ckpt on, again", one_step(fits))
    print(table(rows, ("stage", "status", "peak allocated", "allocated now", "reserved now")))

    leak = allocated_at[after_oom] - allocated_at[after_fit]        # what the failed run left behind
    check("a: first run fits", first["status"] == "ok", f"status {first['status']}")
    check("a: too-big run is an OOM", oom["status"] == "oom", f"status {oom['status']} ({oom.get('error')})")
    check("a: the OOM leaves nothing allocated", abs(leak) <= LEAK_TOLERANCE,
          f"allocated after the OOM − after the first fit = {mib(leak)} (tolerance ±{mib(LEAK_TOLERANCE)})")
    check("a: the first run fits again", again["status"] == "ok", f"status {again['status']}")


# ---- (b) the largest micro-batch -------------------------------------------------------------------------------------
def theory_largest(cfg, limit: int, hi: int = 128):
    """Largest micro-batch whose theory peak (`experiment.estimate(cfg)['theory']['peak']`) is ≤ limit bytes."""
    from labkit.experiment import estimate

    best = None
    for b in range(1, hi + 1):
        if estimate(cfg.replace(micro_batch=b))["theory"]["peak"] > limit:
            break
        best = b
    return best


def section_b(write, stand_in: str, seqs) -> None:
    """`labkit search --t4-profile` in a fresh process, then micro-batch best and best + 1 each run alone in a
    fresh process (one optimizer step), beside the theory's largest fit at the profile's 14.75 GiB and at 14.75 −
    0.5 GiB (a real T4 loses ~0.5 GiB to the CUDA context; the profile caps the allocator, not the context)."""
    from labkit import fresh
    from labkit.config import RunConfig
    from labkit.engine.hardware import T4_TOTAL_MEMORY

    heading("b", "largest micro-batch: search vs runs alone vs theory (llama-3.2-1b, fp16, checkpointing on)",
            stand_in)
    rows = []
    for seq in seqs:
        cfg = RunConfig(model="llama-3.2-1b", seq_len=seq, grad_accum=1, gradient_checkpointing=True,
                        precision="fp16")
        try:
            found = fresh.search(cfg, lo=1, hi=64, weights="random", t4_profile=True)
        except (RuntimeError, ValueError, subprocess.TimeoutExpired) as e:
            check(f"b: seq {seq}, search ran", False, str(e)[:300])
            continue
        best = found["best"]
        trail = " ".join(f"{e['micro_batch']}{'✓' if e['status'] == 'ok' else '✗'}" for e in found["trail"])
        alone = {}
        for b in ([best, best + 1] if best else [1]):
            alone[b] = fresh_run(cfg.replace(micro_batch=b), steps=1)
        at_cap = theory_largest(cfg, T4_TOTAL_MEMORY)
        at_t4 = theory_largest(cfg, T4_TOTAL_MEMORY - ASSUMED_CONTEXT)

        def shown(b):
            r = alone.get(b)
            return "—" if r is None else f"{r['status']} {mib(r['measured']['peak_allocated_bytes'])}"

        rows.append((seq, best, trail, shown(best), shown(best + 1 if best else None), at_cap, at_t4))
        write("b_search", {"seq_len": seq, "search_best": best, "search": found, "t4_profile": T4_PROFILED,
                           "runs_alone": {str(b): r for b, r in alone.items()},
                           "theory_largest_at_14_75_gib": at_cap, "theory_largest_at_14_25_gib": at_t4})
        check(f"b: seq {seq}, best fits alone", bool(best) and alone[best]["status"] == "ok",
              f"best {best}: {shown(best)}")
        if best:
            check(f"b: seq {seq}, best + 1 does not fit alone", alone[best + 1]["status"] == "oom",
                  f"{best + 1}: {shown(best + 1)}")
            check(f"b: seq {seq}, search within 1 of the theory at 14.75 GiB", abs(best - at_cap) <= 1,
                  f"search {best}, theory {at_cap} (at 14.25 GiB: {at_t4})")
    print(table(rows, ("seq", "search best", "tries", "best alone", "best + 1 alone", "theory ≤ 14.75 GiB",
                       "theory ≤ 14.25 GiB")))


# ---- (c) peak: theory vs measured ----------------------------------------------------------------------------------
GRID = {"tiny": (256, 2), "llama-3.2-1b": (512, 2), "qwen2.5-0.5b": (512, 2)}    # model → (seq_len, micro-batch)


def peak_goal(model: str, measured: int, theory: int) -> tuple[bool, str]:
    """±3 % for the hub presets; ±16 MiB for tiny, whose whole peak is a few MiB (a percentage says little)."""
    if model == "tiny":
        return abs(theory - measured) <= PEAK_GOAL_TINY, f"±{mib(PEAK_GOAL_TINY)}"
    return abs(theory / measured - 1) <= PEAK_GOAL_FRACTION, f"±{PEAK_GOAL_FRACTION:.0%}"


def section_c(write, stand_in: str, precisions, checkpointing) -> None:
    """Each config in a fresh process (`labkit run --t4-profile --json`, 2 steps, warm-up 1): its measured peak
    allocated (max over the steps) beside the theory peak the same record carries."""
    from labkit.config import RunConfig

    heading("c", "peak allocated: theory vs measured, fresh process per run (grad-accum 1, 2 steps)", stand_in)
    rows = []
    for model, (seq, micro) in GRID.items():
        for precision in precisions:
            for gc in checkpointing:
                cfg = RunConfig(model=model, seq_len=seq, micro_batch=micro, grad_accum=1, precision=precision,
                                gradient_checkpointing=gc)
                rec = fresh_run(cfg, steps=2)
                measured, theory = rec["measured"]["peak_allocated_bytes"], rec["theory"].get("peak")
                name = f"c: {model} {precision} ckpt {'on' if gc else 'off'}"
                if rec["status"] != "ok" or not measured:
                    rows.append((model, precision, "on" if gc else "off", rec["status"], "—", mib(theory), "", "",
                                 ""))
                    check(name, False, f"status {rec['status']} ({rec.get('error')})")
                    write("c_peak_grid", {"model": model, "precision": precision, "checkpointing": gc,
                                          "status": rec["status"], "record": rec, "t4_profile": T4_PROFILED})
                    continue
                ok, goal = peak_goal(model, measured, theory)
                error = theory / measured - 1
                rows.append((model, precision, "on" if gc else "off", rec["status"], mib(measured), mib(theory),
                             f"{error:+.1%}", goal, "yes" if ok else "no"))
                write("c_peak_grid", {"model": model, "precision": precision, "checkpointing": gc,
                                      "status": rec["status"], "peak_allocated_bytes": measured,
                                      "theory_peak_bytes": theory, "error": error, "goal": goal, "met": ok,
                                      "labels": rec["labels"], "record": rec, "t4_profile": T4_PROFILED})
                check(name, ok, f"theory {mib(theory)} vs measured {mib(measured)} ({error:+.1%}, goal {goal})")
    print(table(rows, ("model", "precision", "ckpt", "status", "peak measured", "peak theory", "error", "goal",
                       "met")))


# ---- (d) lessons executed --------------------------------------------------------------------------------------------
def section_d(write, out: Path, lessons) -> None:
    """Execute each lesson top to bottom with nbclient (a fresh kernel each, the whole GPU, as a learner would);
    the executed notebooks are saved under DIR/notebooks/ so their figures can be read."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    heading("d", "lessons executed with nbclient", "the whole GPU, as a learner's run of the lesson (06 and 07 cap "
            "themselves to a T4's memory for their OOM and fit scenes)")
    folder = out / "notebooks"
    folder.mkdir(exist_ok=True)
    rows = []
    for name in lessons:
        nb = nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
        t0, error = time.perf_counter(), None
        try:
            NotebookClient(nb, timeout=600, kernel_name="python3",
                           resources={"metadata": {"path": str(folder)}}).execute()
        except CellExecutionError as e:
            error = str(e).strip().splitlines()[-1][:200]
        except Exception as e:  # noqa: BLE001 — a kernel that died is a failed lesson, reported
            error = f"{type(e).__name__}: {e}"[:200]
        seconds = time.perf_counter() - t0
        nbformat.write(nb, folder / f"{name}.ipynb")
        rows.append((name, "pass" if error is None else "FAIL", f"{seconds:.0f} s", error or ""))
        write("d_lessons", {"lesson": name, "passed": error is None, "seconds": seconds, "error": error})
        check(f"d: lesson {name}", error is None, error or f"executed in {seconds:.0f} s")
    print(table(rows, ("lesson", "result", "time", "error")))


# ---- (e) the GPU tests -----------------------------------------------------------------------------------------------
def section_e(write) -> None:
    """`pytest -m gpu tests/test_gpu.py` in its own process; its summary line and exit code."""
    heading("e", "pytest -m gpu tests/test_gpu.py", "the tests set the T4 profile themselves where they need it")
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider",
                           "tests/test_gpu.py"], cwd=ROOT, capture_output=True, text=True, timeout=1200)
    seconds = time.perf_counter() - t0
    lines = done.stdout.strip().splitlines()
    summary = lines[-1] if lines else done.stderr.strip()[-200:]
    print("\n".join(lines[-15:]))
    write("e_pytest", {"returncode": done.returncode, "summary": summary, "seconds": seconds,
                       "stdout_tail": "\n".join(lines[-60:])})
    check("e: pytest -m gpu", done.returncode == 0, f"{summary} ({seconds:.0f} s)")


# ---- (f) the time theory ---------------------------------------------------------------------------------------------
TIME_GRID = [("mb 1", dict(micro_batch=1)), ("mb 2", dict(micro_batch=2)), ("mb 4", dict(micro_batch=4)),
             ("mb 8", dict(micro_batch=8)), ("mb 4 ckpt off", dict(micro_batch=4, gradient_checkpointing=False)),
             ("mb 4 fp32", dict(micro_batch=4, precision="fp32"))]
TIME_DELTAS = [("micro-batch 1 → 4", "mb 1", "mb 4"), ("checkpointing off → on", "mb 4 ckpt off", "mb 4"),
               ("fp16 → fp32", "mb 4", "mb 4 fp32")]


def section_f(write, stand_in: str) -> None:
    """Calibrate this GPU in a fresh process (cached for the runs that follow), then run the grid in fresh
    processes (4 steps, warm-up 1): each record's measured.step_time_s beside its theory.time.step_s."""
    from labkit.config import RunConfig

    heading("f", "time theory vs measured (llama-3.2-1b, seq 512, grad-accum 1, constants calibrated here)",
            stand_in + "; times are this GPU's, not a T4's")
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "labkit", "calibrate", "--force"], cwd=ROOT, capture_output=True,
                          text=True, timeout=900)
    print(done.stdout.strip()[-1500:] or done.stderr.strip()[-1500:])
    write("f_calibration", {"returncode": done.returncode, "stdout": done.stdout[-4000:],
                            "stderr": done.stderr[-2000:], "seconds": time.perf_counter() - t0})
    check("f: labkit calibrate on CUDA", done.returncode == 0, f"exit {done.returncode} "
          f"in {time.perf_counter() - t0:.0f} s")
    rows, step = [], {}
    for name, change in TIME_GRID:
        rec = fresh_run(RunConfig(model="llama-3.2-1b", seq_len=512, grad_accum=1, **{"precision": "fp16", **change}),
                        steps=4)
        measured = (rec.get("measured") or {}).get("step_time_s")
        t = (rec.get("theory") or {}).get("time") or {}
        step[name] = (measured, t.get("step_s"))
        error = t["step_s"] / measured - 1 if measured and t.get("step_s") else None
        rows.append((name, rec["status"], f"{measured:.3f} s" if measured else "—",
                     f"{t['step_s']:.3f} s" if t.get("step_s") else "—", f"{error:+.0%}" if error is not None else "",
                     t.get("regime") or "", ((t.get("constants") or {}).get("source") or "")[:40]))
        write("f_time", {"config": name, "status": rec["status"], "measured_step_s": measured, "theory": t,
                         "error": error, "record": rec})
        check(f"f: step time {name}", error is not None and abs(error) <= 0.25,
              f"theory {t.get('step_s')} vs measured {measured}")
    print(table(rows, ("config", "status", "measured", "theory", "error", "regime", "constants")))
    for label, a, b in TIME_DELTAS:
        (ma, ta), (mb, tb) = step[a], step[b]
        if None in (ma, ta, mb, tb):
            check(f"f: delta {label}", False, "a run did not measure")
            continue
        gap = (tb / ta - 1) - (mb / ma - 1)
        write("f_deltas", {"delta": label, "measured": mb / ma - 1, "theory": tb / ta - 1, "gap_points": 100 * gap})
        check(f"f: delta {label}", abs(gap) <= 0.15,
              f"measured {mb / ma - 1:+.0%}, theory {tb / ta - 1:+.0%} ({100 * gap:+.0f} points)")


# ---- main ------------------------------------------------------------------------------------------------------------
def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="gpu_check", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--quick", action="store_true",
                   help="b: seq 512 only; c: fp16 with checkpointing on only; d: lesson 06 only")
    p.add_argument("--out", metavar="DIR", help="folder for the JSONL files (default runs/gpu-check-<time>)")
    p.add_argument("--only", metavar="LETTERS", default="abcdef",
                   help="sections to run, e.g. 'bc' (default abcdef)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if set(args.only) - set("abcdef") or not args.only:
        print(f"gpu_check: error: --only takes letters among a, b, c, d, e, f, got {args.only!r}", file=sys.stderr)
        return 2
    import torch
    if not torch.cuda.is_available():
        print("gpu_check: error: needs a CUDA GPU and torch sees none here; nothing was run", file=sys.stderr)
        return 2

    sys.path.insert(0, str(ROOT))                                   # this checkout's labkit, here and in children
    os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in [os.environ.get("PYTHONPATH")] if p])
    for name in ("PYTORCH_CUDA_ALLOC_CONF", "PYTORCH_ALLOC_CONF"):   # the allocator's defaults, unless a lesson says
        os.environ.pop(name, None)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = Path(args.out) if args.out else ROOT / "runs" / f"gpu-check-{stamp}"
    write = Writer(out)
    t_start = time.perf_counter()
    facts = header()
    write("header", facts)

    from labkit.engine.hardware import t4_profile, t4_profile_active
    global T4_PROFILED
    t4_profile()                                                    # this process: section a and the theory of b
    T4_PROFILED = t4_profile_active()
    stand_in = (f"T4-profile: {facts['gpu']} capped at 14.75 GiB per process (a stand-in for a T4's memory, not a T4)"
                if t4_profile_active() else f"{facts['gpu']}: no bigger than a T4, so the cap changes nothing")
    sections = {
        "a": lambda: section_a(write, stand_in),
        "b": lambda: section_b(write, stand_in, (512,) if args.quick else (512, 2048)),
        "c": lambda: section_c(write, stand_in, ("fp16",) if args.quick else ("fp16", "fp32"),
                               (True,) if args.quick else (True, False)),
        "d": lambda: section_d(write, out, ("06_debugging_oom",) if args.quick else
                               ("03_batch_and_accumulation", "06_debugging_oom")),
        "e": lambda: section_e(write),
        "f": lambda: section_f(write, stand_in),
    }
    for letter in args.only:
        t0 = time.perf_counter()
        try:
            sections[letter]()
        except Exception as e:  # noqa: BLE001 — one section's crash is reported; the others still run
            traceback.print_exc(limit=6)
            check(f"{letter}: section ran", False, f"{type(e).__name__}: {e}"[:300])
        print(f"   ({letter} took {time.perf_counter() - t0:.0f} s)", flush=True)

    failed = [r for r in RESULTS if not r[1]]
    print(f"\n== summary: {len(RESULTS) - len(failed)} of {len(RESULTS)} checks passed in "
          f"{(time.perf_counter() - t_start) / 60:.1f} min; JSONL in {out}")
    for name, _, line in failed:
        print(f"   FAIL  {name}: {line}")
    write("summary", {"checks": [{"check": n, "passed": p, "detail": d} for n, p, d in RESULTS],
                      "minutes": (time.perf_counter() - t_start) / 60})
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
