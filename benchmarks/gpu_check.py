"""Every GPU claim of the kit, checked on a machine with a CUDA GPU, in parts that each fit a short loan of one.

    python benchmarks/gpu_check.py --list                       # the parts and how long each should take
    python benchmarks/gpu_check.py --only a --out runs/gpu-check   # one part; run the others into the same folder
    python benchmarks/gpu_check.py                              # every part, one after another (~30 minutes)
    python benchmarks/gpu_check.py --quick --only bcd           # fewer configs where a part has a grid

Parts: PARTS, below, gives each one's letter, estimated minutes and what it checks (`--list` and `--help` print
them). Each prints a table and its checks, and writes DIR/<part>_*.jsonl, one JSON object a line. The minutes are
estimates for an H100/H200 from the sizes involved (model loads of ~10 s, a 1B model's steps in well under a
second): no part has been timed on a GPU yet. Each part prints the time it took; put the measured time in PARTS.

"T4-profile" means this GPU with each process capped at a Colab T4's 14.75 GiB less the CUDA context
(`labkit.engine.hardware.t4_profile`) and trained in a T4's precision (fp16): memory figures carry over to a T4,
times do not. Hub presets use shape-only random weights (`--weights random`): memory and time are real, losses
are not. Lessons run under the T4 profile from their first cell, as a T4 learner's Run All would take them, and
what they print is read for nan, None, error text and stderr (`labkit.course.lesson_outputs`).

Every record measured in a fresh process (parts b, c, f, i) is also appended to DIR/reference/<gpu>[-t4-profile]-
<date>.jsonl, a reference set the lab can replay; DIR/reference/README.md says how it was made, in the row
labkit/reference/README.md wants. Copy both in to commit them.

The children (`python -m labkit …`, notebook kernels, pytest) import the labkit of this checkout: its folder is put
first on PYTHONPATH. Without CUDA the script refuses in one line, exit code 2 (`--list` and `--help` work
anywhere). Exit code 1 when a check failed.
"""
from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))                                   # this checkout's labkit, here and (main) in children

from labkit.goals import DELTA_POINTS, OP_COUNT_REL, STEP_TIME_REL, peak_goal  # noqa: E402
from labkit.record import RunRecord, dumps, typed  # noqa: E402
from labkit.units import GiB, MiB  # noqa: E402

ASSUMED_CONTEXT = GiB // 2           # a T4's CUDA context and libraries, ~0.5 GiB, come out of its 14.75 GiB
LEAK_TOLERANCE = 64 * MiB            # after an OOM, allocated must be back within this of where it was before

# Lessons by part: a T4 learner's Run All, three parts so that each fits a loan (03 searches and sweeps: the longest)
LESSON_PARTS = {"d": ("00_start_here", "01_where_memory_goes", "02_gradient_checkpointing"),
                "g": ("03_batch_and_accumulation", "04_mixed_precision"),
                "h": ("05_qlora_together", "06_debugging_oom", "07_discussion")}

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


def fresh_run(cfg, steps: int, write=None, t4: bool = True) -> RunRecord:
    """`labkit run --json --weights random` (with `--t4-profile` unless `t4` is False) in a fresh process. A child
    that dies without a record (a crash, a timeout) becomes a record with status "crash", so one bad config does not
    end the part. A measured record (ok or OOM) also goes to the reference set (`write.reference`)."""
    from labkit import fresh
    try:
        rec = typed(fresh.run(cfg, steps=steps, weights="random", t4_profile=t4))
    except (RuntimeError, ValueError, subprocess.TimeoutExpired) as e:
        return RunRecord(config=cfg.to_dict(), status="crash", error=str(e)[:300])
    if write is not None and rec.status in ("ok", "oom"):
        write.reference(rec, t4)
    return rec


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


class Writer:
    """DIR/<part>_<what>.jsonl, one row a line, flushed as it goes (a crash keeps what was measured), and the
    reference sets under DIR/reference/."""

    def __init__(self, out: Path, gpu: str = "gpu", date: str | None = None):
        self.out = out
        out.mkdir(parents=True, exist_ok=True)
        self.gpu, self.date = gpu, date or datetime.date.today().isoformat()

    def __call__(self, section: str, row: dict) -> None:
        with open(self.out / f"{section}.jsonl", "a", encoding="utf-8") as fh:      # a record inside as its JSON form
            fh.write(json.dumps(row, default=lambda o: o.to_dict() if hasattr(o, "to_dict") else str(o)) + "\n")

    def reference_name(self, t4: bool) -> str:
        """'nvidia-h100-80gb-hbm3-t4-profile-2026-12-08'"""
        return f"{slug(self.gpu)}{'-t4-profile' if t4 else ''}-{self.date}"

    def reference(self, record: dict, t4: bool) -> None:
        folder = self.out / "reference"
        folder.mkdir(exist_ok=True)
        with open(folder / f"{self.reference_name(t4)}.jsonl", "a", encoding="utf-8") as fh:
            fh.write(dumps(record) + "\n")


def reference_readme(out: Path, facts: dict, argv: list[str]) -> str | None:
    """DIR/reference/README.md: one row per set written, in labkit/reference/README.md's table (set, recorded on,
    how). None when no set was written."""
    folder = out / "reference"
    sets = sorted(folder.glob("*.jsonl")) if folder.is_dir() else []
    if not sets:
        return None
    rows = []
    for path in sets:
        records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        status = {s: sum(r.get("status") == s for r in records) for s in ("ok", "oom")}
        where = facts["gpu"] + (" in T4 profile" if "-t4-profile-" in path.name else "")
        rows.append(f"| `{path.stem}` | an {where}, {facts['time'][:10]} | `benchmarks/gpu_check.py "
                    f"{' '.join(argv)}` (project at commit {facts.get('labkit_commit') or 'unknown'}): "
                    f"{len(records)} runs, each in a fresh process ({status['ok']} ok, {status['oom']} OOM), "
                    f"shape-only weights; torch {facts['torch']}, transformers {facts['transformers']}, peft "
                    f"{facts['peft']}, bitsandbytes {facts['bitsandbytes']}. |")
    text = ("# Reference sets from benchmarks/gpu_check.py\n\nCopy the .jsonl files to labkit/reference/ and these "
            "rows into the table of labkit/reference/README.md. Never edit the numbers.\n\n"
            "| set | recorded on | how |\n|---|---|---|\n" + "\n".join(rows) + "\n")
    (folder / "README.md").write_text(text, encoding="utf-8")
    return text


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
        record = typed(record) if record is not None else None
        peak = record.measured.peak_allocated_bytes if record else None
        rows.append((name, record.status if record else "", mib(peak), mib(allocated), mib(reserved)))
        write("a_oom_scene", {"stage": name, "status": record.status if record else None,
                              "peak_allocated_bytes": peak, "allocated_bytes": allocated, "reserved_bytes": reserved,
                              "config": record.config if record else None,
                              "error": record.error if record else None, "t4_profile": T4_PROFILED})
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
    check("a: first run fits", first.status == "ok", f"status {first.status}")
    check("a: too-big run is an OOM", oom.status == "oom", f"status {oom.status} ({oom.error})")
    check("a: the OOM leaves nothing allocated", abs(leak) <= LEAK_TOLERANCE,
          f"allocated after the OOM − after the first fit = {mib(leak)} (tolerance ±{mib(LEAK_TOLERANCE)})")
    check("a: the first run fits again", again.status == "ok", f"status {again.status}")


# ---- (b) the largest micro-batch -------------------------------------------------------------------------------------
def theory_largest(cfg, limit: int, hi: int = 128):
    """Largest micro-batch whose theory peak (`experiment.estimate(cfg).theory.peak`) is ≤ limit bytes."""
    from labkit.experiment import estimate

    best = None
    for b in range(1, hi + 1):
        if estimate(cfg.replace(micro_batch=b)).theory.peak > limit:
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
            alone[b] = fresh_run(cfg.replace(micro_batch=b), steps=1, write=write)
        at_cap = theory_largest(cfg, T4_TOTAL_MEMORY)
        at_t4 = theory_largest(cfg, T4_TOTAL_MEMORY - ASSUMED_CONTEXT)

        def shown(b):
            r = alone.get(b)
            return "—" if r is None else f"{r.status} {mib(r.measured.peak_allocated_bytes)}"

        rows.append((seq, best, trail, shown(best), shown(best + 1 if best else None), at_cap, at_t4))
        write("b_search", {"seq_len": seq, "search_best": best, "search": found, "t4_profile": T4_PROFILED,
                           "runs_alone": {str(b): r for b, r in alone.items()},
                           "theory_largest_at_14_75_gib": at_cap, "theory_largest_at_14_25_gib": at_t4})
        check(f"b: seq {seq}, best fits alone", bool(best) and alone[best].status == "ok",
              f"best {best}: {shown(best)}")
        if best:
            check(f"b: seq {seq}, best + 1 does not fit alone", alone[best + 1].status == "oom",
                  f"{best + 1}: {shown(best + 1)}")
            check(f"b: seq {seq}, search within 1 of the theory at 14.75 GiB", abs(best - at_cap) <= 1,
                  f"search {best}, theory {at_cap} (at 14.25 GiB: {at_t4})")
    print(table(rows, ("seq", "search best", "tries", "best alone", "best + 1 alone", "theory ≤ 14.75 GiB",
                       "theory ≤ 14.25 GiB")))


# ---- (c) peak: theory vs measured ----------------------------------------------------------------------------------
GRID = {"tiny": (256, 2), "llama-3.2-1b": (512, 2), "qwen2.5-0.5b": (512, 2)}    # model → (seq_len, micro-batch)


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
                rec = fresh_run(cfg, steps=2, write=write)
                measured, theory = rec.measured.peak_allocated_bytes, rec.theory.peak
                name = f"c: {model} {precision} ckpt {'on' if gc else 'off'}"
                if rec.status != "ok" or not measured:
                    rows.append((model, precision, "on" if gc else "off", rec.status, "—", mib(theory), "", "",
                                 ""))
                    check(name, False, f"status {rec.status} ({rec.error})")
                    write("c_peak_grid", {"model": model, "precision": precision, "checkpointing": gc,
                                          "status": rec.status, "record": rec, "t4_profile": T4_PROFILED})
                    continue
                ok, goal = peak_goal(model, measured, theory)
                error = theory / measured - 1
                rows.append((model, precision, "on" if gc else "off", rec.status, mib(measured), mib(theory),
                             f"{error:+.1%}", goal, "yes" if ok else "no"))
                write("c_peak_grid", {"model": model, "precision": precision, "checkpointing": gc,
                                      "status": rec.status, "peak_allocated_bytes": measured,
                                      "theory_peak_bytes": theory, "error": error, "goal": goal, "met": ok,
                                      "labels": rec.labels, "record": rec, "t4_profile": T4_PROFILED})
                check(name, ok, f"theory {mib(theory)} vs measured {mib(measured)} ({error:+.1%}, goal {goal})")
    print(table(rows, ("model", "precision", "ckpt", "status", "peak measured", "peak theory", "error", "goal",
                       "met")))


# ---- (d, g, h) lessons executed under the T4 profile ---------------------------------------------------------------
T4_FIRST_CELL = ("# gpu_check: this GPU capped at a T4's memory before the lesson starts, so the lesson takes a T4's\n"
                 "# path (fp16) and runs out of memory where a T4 would (a T4 itself is left as it is)\n"
                 "from labkit.engine.hardware import t4_profile\n"
                 "t4_profile()")


def section_lessons(write, out: Path, letter: str, lessons) -> None:
    """Execute each lesson top to bottom with nbclient, a fresh kernel each, under the T4 profile from a first
    cell added for the check; read what it printed (`lesson_outputs.problems`); save the executed copy under
    DIR/notebooks/ so its figures can be read."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    from labkit.course.lesson_outputs import problems

    heading(letter, "lessons executed with nbclient under the T4 profile: " + ", ".join(lessons),
            "a T4 learner's Run All on this GPU capped at a T4's memory; times are this GPU's")
    folder = out / "notebooks"
    folder.mkdir(exist_ok=True)
    rows = []
    for name in lessons:
        nb = nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
        nb.cells.insert(0, nbformat.v4.new_code_cell(T4_FIRST_CELL))
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
        nb.cells.pop(0)                                   # cell numbers as in the lesson
        said = problems(nb)
        rows.append((name, "pass" if error is None else "FAIL", f"{seconds:.0f} s", len(said), error or ""))
        write(f"{letter}_lessons", {"lesson": name, "passed": error is None, "seconds": seconds, "error": error,
                                    "problems": said, "t4_profile": T4_PROFILED})
        check(f"{letter}: lesson {name} runs", error is None, error or f"executed in {seconds:.0f} s")
        check(f"{letter}: lesson {name} reads clean", not said,
              "; ".join(said[:3]) + (f" (+{len(said) - 3} more)" if len(said) > 3 else "") if said
              else "no nan, None, error text or stderr in its outputs")
    print(table(rows, ("lesson", "result", "time", "problems", "error")))


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


# ---- (f, i) the time theory: this GPU's own path, then a T4's ---------------------------------------------------------
TIME_GRID = [("mb 1", dict(micro_batch=1)), ("mb 2", dict(micro_batch=2)), ("mb 4", dict(micro_batch=4)),
             ("mb 8", dict(micro_batch=8)), ("mb 4 ckpt off", dict(micro_batch=4, gradient_checkpointing=False)),
             ("mb 4 fp32", dict(micro_batch=4, precision="fp32"))]
TIME_DELTAS = [("micro-batch 1 → 4", "mb 1", "mb 4"), ("checkpointing off → on", "mb 4 ckpt off", "mb 4"),
               ("auto → fp32", "mb 4", "mb 4 fp32")]


def section_time(write, stand_in: str, letter: str, t4: bool) -> None:
    """Calibrate in a fresh process (`labkit calibrate --force`, with `--t4-profile` for a T4's path: fp16 probes,
    cached apart from the GPU's own), then the grid in fresh processes (4 steps, warm-up 1), each record's
    measured.step_time_s beside its theory.time.step_s, which uses the constants just measured."""
    from labkit.config import RunConfig

    path = "a T4's path (T4 profile: fp16, capped memory)" if t4 else "this GPU's own path (precision auto, no cap)"
    heading(letter, f"time theory vs measured on {path}: llama-3.2-1b, seq 512, grad-accum 1",
            (stand_in if t4 else "the whole GPU") + "; times are this GPU's, not a T4's")
    t0 = time.perf_counter()
    command = [sys.executable, "-m", "labkit", "calibrate", "--force"] + (["--t4-profile"] if t4 else [])
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900)
    print(done.stdout.strip()[-1500:] or done.stderr.strip()[-1500:])
    write(f"{letter}_calibration", {"command": command[1:], "returncode": done.returncode,
                                    "stdout": done.stdout[-4000:], "stderr": done.stderr[-2000:],
                                    "seconds": time.perf_counter() - t0})
    check(f"{letter}: labkit {' '.join(command[3:])}", done.returncode == 0,
          f"exit {done.returncode} in {time.perf_counter() - t0:.0f} s")
    rows, step = [], {}
    for name, change in TIME_GRID:
        cfg = RunConfig(model="llama-3.2-1b", seq_len=512, grad_accum=1, **change)
        rec = fresh_run(cfg, steps=4, write=write, t4=t4)
        measured = rec.measured.step_time_s
        t = rec.theory.time or {}
        step[name] = (measured, t.get("step_s"))
        error = t["step_s"] / measured - 1 if measured and t.get("step_s") else None
        rows.append((name, (rec.resolved or {}).get("precision") or "", rec.status,
                     f"{measured:.3f} s" if measured else "—", f"{t['step_s']:.3f} s" if t.get("step_s") else "—",
                     f"{error:+.0%}" if error is not None else "", t.get("regime") or "",
                     ((t.get("constants") or {}).get("source") or "")[:40]))
        write(f"{letter}_time", {"config": name, "status": rec.status, "measured_step_s": measured, "theory": t,
                                 "error": error, "record": rec, "t4_profile": t4 and T4_PROFILED})
        check(f"{letter}: step time {name}", error is not None and abs(error) <= STEP_TIME_REL,
              f"theory {t.get('step_s')} vs measured {measured} (goal ±{STEP_TIME_REL:.0%})")
    print(table(rows, ("config", "precision", "status", "measured", "theory", "error", "regime", "constants")))
    for label, a, b in TIME_DELTAS:
        (ma, ta), (mb, tb) = step[a], step[b]
        if None in (ma, ta, mb, tb):
            check(f"{letter}: delta {label}", False, "a run did not measure")
            continue
        gap = (tb / ta - 1) - (mb / ma - 1)
        write(f"{letter}_deltas", {"delta": label, "measured": mb / ma - 1, "theory": tb / ta - 1,
                                   "gap_points": 100 * gap})
        check(f"{letter}: delta {label}", abs(gap) * 100 <= DELTA_POINTS,
              f"measured {mb / ma - 1:+.0%}, theory {tb / ta - 1:+.0%} ({100 * gap:+.0f} points, goal "
              f"±{DELTA_POINTS})")


# ---- (j) op counts on CUDA -------------------------------------------------------------------------------------------
def _op_count_table():
    spec = importlib.util.spec_from_file_location("op_count_table", Path(__file__).with_name("op_count_table.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def section_j(write, stand_in: str, quick: bool) -> None:
    """benchmarks/op_count_table.py's grid (tiny, and Qwen2- and Mistral-style shapes unless --quick), in this
    process on CUDA: first on this GPU's own path (the cap lifted), then on a T4's (the T4 profile: fp16, the bf16
    variant left out). The theory picks the attention path from the capability it is told (7.5 under the profile)."""
    from labkit.engine.hardware import t4_profile, t4_profile_off
    from labkit.shapes import write_check_configs

    heading("j", "op counts, theory vs measured, on CUDA", "this GPU's own path, then the T4 profile")
    ops = _op_count_table()
    models = {"tiny": "tiny"} if quick else {"tiny": "tiny", **write_check_configs(tempfile.mkdtemp())}
    t4_profile_off()
    try:
        own = ops.table(models)
    finally:
        if T4_PROFILED:
            t4_profile()
    paths = [("own path", own)]
    if T4_PROFILED:
        no_bf16 = [(label, change) for label, change in ops.VARIANTS if change.get("precision") != "bf16"]
        paths.append(("T4 profile", ops.table(models, no_bf16)))
    for path, rows in paths:
        for row in rows:
            write("j_op_counts", {"path": path, **row})
        worst = ops.worst(rows)
        check(f"j: op counts, {path}", worst <= OP_COUNT_REL,
              f"worst error of the total {worst:.2%} over {len(rows)} runs (goal ±{OP_COUNT_REL:.0%})"
              if worst < float("inf") else f"{sum(r['error'] is None for r in rows)} of {len(rows)} runs did not "
                                           "finish")


# ---- main ------------------------------------------------------------------------------------------------------------
# letter → (estimated minutes on an H100/H200, what the part checks); the docstring's table is made from this
PARTS = {
    "a": (1, "the OOM scene in one process under the T4 profile: a run that fits, one that runs out of memory, the "
             "first again; allocated and reserved after each stage (a failed run must leave nothing allocated)"),
    "b": (3, "the largest micro-batch under the T4 profile (llama-3.2-1b, checkpointing on, seq 512 and 2048): "
             "`labkit search`, best and best + 1 each alone in a fresh process, the theory's largest fit"),
    "c": (4, "peak allocated, theory vs measured: tiny, llama-3.2-1b, qwen2.5-0.5b × fp16/fp32 × checkpointing "
             "on/off, a fresh process each under the T4 profile (goal ±3 %, tiny ±16 MiB)"),
    "d": (3, "lessons " + ", ".join(n[:2] for n in LESSON_PARTS["d"]) + " executed under the T4 profile; their "
             "outputs read for nan, None, error text and stderr"),
    "e": (1, "`pytest -m gpu tests/test_gpu.py`"),
    "f": (3, "the time theory on this GPU's own path: `labkit calibrate --force`, then llama-3.2-1b at seq 512 "
             "(micro-batch 1/2/4/8, checkpointing off, fp32), step time vs theory and each toggle's delta"),
    "g": (5, "lessons " + ", ".join(n[:2] for n in LESSON_PARTS["g"]) + " executed under the T4 profile (03 searches "
             "and sweeps); outputs read as in d"),
    "h": (5, "lessons " + ", ".join(n[:2] for n in LESSON_PARTS["h"]) + " executed under the T4 profile; outputs "
             "read as in d"),
    "i": (3, "the time theory on a T4's path: `labkit calibrate --force --t4-profile` (fp16 probes), then f's "
             "grid under the T4 profile"),
    "j": (3, "op counts on CUDA, theory vs measured: op_count_table.py's grid on this GPU's own path, then under "
             "the T4 profile (goal ±5 %)"),
}


def parts_text() -> str:
    lines = [f"{'part':4s}  {'minutes':>7s}  what"] + [f"{letter:4s}  {'~' + str(minutes):>7s}  {text}"
                                                       for letter, (minutes, text) in PARTS.items()]
    return "\n".join(lines) + f"\n\nin all ~{sum(m for m, _ in PARTS.values())} minutes (estimates, not yet timed on a GPU)"


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="gpu_check", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1] + "\n" + parts_text())
    p.add_argument("--list", action="store_true", help="print the parts with their estimated minutes, and stop")
    p.add_argument("--quick", action="store_true",
                   help="b: seq 512 only; c: fp16 with checkpointing on only; j: tiny only")
    p.add_argument("--out", metavar="DIR", help="folder for the JSONL files (default runs/gpu-check-<time>); "
                                                "parts run one at a time can share it")
    p.add_argument("--only", metavar="LETTERS", default="".join(PARTS),
                   help=f"parts to run, e.g. 'a' or 'bc' (default all: {''.join(PARTS)})")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.list:
        print(parts_text())
        return 0
    if set(args.only) - set(PARTS) or not args.only:
        print(f"gpu_check: error: --only takes letters among {', '.join(PARTS)}, got {args.only!r}", file=sys.stderr)
        return 2
    import torch
    if not torch.cuda.is_available():
        print("gpu_check: error: needs a CUDA GPU and torch sees none here; nothing was run", file=sys.stderr)
        return 2

    os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in [os.environ.get("PYTHONPATH")] if p])
    for name in ("PYTORCH_CUDA_ALLOC_CONF", "PYTORCH_ALLOC_CONF"):   # the allocator's defaults, unless a lesson says
        os.environ.pop(name, None)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = Path(args.out) if args.out else ROOT / "runs" / f"gpu-check-{stamp}"
    t_start = time.perf_counter()
    facts = header()
    write = Writer(out, facts["gpu"], facts["time"][:10])
    write("header", facts)

    from labkit.engine.hardware import t4_profile, t4_profile_active
    global T4_PROFILED
    t4_profile()                                                    # this process: a, the theory of b, j's T4 path
    T4_PROFILED = t4_profile_active()
    stand_in = (f"T4-profile: {facts['gpu']} capped at a T4's memory per process (a stand-in for a T4's memory, "
                "not a T4)" if t4_profile_active() else f"{facts['gpu']}: no bigger than a T4, so the cap changes "
                                                         "nothing")
    sections = {
        "a": lambda: section_a(write, stand_in),
        "b": lambda: section_b(write, stand_in, (512,) if args.quick else (512, 2048)),
        "c": lambda: section_c(write, stand_in, ("fp16",) if args.quick else ("fp16", "fp32"),
                               (True,) if args.quick else (True, False)),
        "d": lambda: section_lessons(write, out, "d", LESSON_PARTS["d"]),
        "e": lambda: section_e(write),
        "f": lambda: section_time(write, stand_in, "f", t4=False),
        "g": lambda: section_lessons(write, out, "g", LESSON_PARTS["g"]),
        "h": lambda: section_lessons(write, out, "h", LESSON_PARTS["h"]),
        "i": lambda: section_time(write, stand_in, "i", t4=True),
        "j": lambda: section_j(write, stand_in, args.quick),
    }
    timings = {}
    for letter in args.only:
        t0 = time.perf_counter()
        try:
            sections[letter]()
        except Exception as e:  # noqa: BLE001 — one part's crash is reported; the others still run
            traceback.print_exc(limit=6)
            check(f"{letter}: part ran", False, f"{type(e).__name__}: {e}"[:300])
        timings[letter] = time.perf_counter() - t0
        print(f"   ({letter} took {timings[letter] / 60:.1f} min; estimated ~{PARTS[letter][0]} min)", flush=True)

    if reference_readme(out, facts, sys.argv[1:] if argv is None else list(argv)):
        print(f"\nreference sets written to {out / 'reference'} (README.md there says how to commit them)")
    failed = [r for r in RESULTS if not r[1]]
    print(f"\n== summary: {len(RESULTS) - len(failed)} of {len(RESULTS)} checks passed in "
          f"{(time.perf_counter() - t_start) / 60:.1f} min; JSONL in {out}")
    print("   " + ", ".join(f"{k} {v / 60:.1f} min" for k, v in timings.items()))
    for name, _, line in failed:
        print(f"   FAIL  {name}: {line}")
    write("summary", {"parts": args.only, "checks": [{"check": n, "passed": p, "detail": d} for n, p, d in RESULTS],
                      "minutes": (time.perf_counter() - t_start) / 60,
                      "part_minutes": {k: v / 60 for k, v in timings.items()}})
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
