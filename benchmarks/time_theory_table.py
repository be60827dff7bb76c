"""Step time, theory vs measured: the three-regime model (compute · memory · overhead) against real steps.

    python benchmarks/time_theory_table.py                 # the tiny CPU grid, measured here, + the shared GPU records
    python benchmarks/time_theory_table.py --records-only  # only the shared GPU records (no run)
    python benchmarks/time_theory_table.py --fit           # how the GPU overhead constants were fitted to the records

CPU grid (measured here, with constants calibrated in the same session, before and after the grid, averaged):
the tiny preset, seq 128, micro-batch 1, accumulation 1, checkpointing on, fp32, and one toggle at a time:
checkpointing off, micro-batch 4, accumulation 8, seq 512 (seq 2048 is not cheap on a CPU), bf16. The configs
run in interleaved rounds (each round runs every config once), and each config keeps its fastest round: a
shared machine slows runs down, it never speeds them up. Torch runs on one thread (steadier under load; the
calibration uses the same).

GPU records (`--records`, default ../shared/gpu-records/h100-t4-profile-2026-11-22): H100 80GB in T4 profile,
fp16 (one fp32 run). No GPU is calibrated here, so the theory uses the H100 SXM data sheet for F and B and the
overhead constants `theory.time.GPU_RECORD_OVERHEAD`, which were FITTED (`--fit`) to the flat region of these same
records (fp16, llama-3.2-1b seq 512 and tiny seq 128, every micro-batch and accumulation): for those rows, marked
(fit), the table shows a fit, not an independent prediction. The rows outside it (seq 2048, fp32) are predictions.

Printed: theory (compute · memory · overhead, regime) vs measured step time and its error; each toggle's time
delta, theory vs measured, in points; the worst errors; the constants used.
"""
from __future__ import annotations

import argparse
import contextlib
import glob
import os
import time
import types
import warnings

from labkit.goals import DELTA_POINTS, STEP_TIME_REL

DEFAULT_RECORDS = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "gpu-records",
                               "h100-t4-profile-2026-11-22")
BASE = dict(model="tiny", seq_len=128, micro_batch=1, grad_accum=1, gradient_checkpointing=True, precision="fp32")
TOGGLES = {"base": {}, "checkpointing off": dict(gradient_checkpointing=False), "micro-batch 4": dict(micro_batch=4),
           "accumulation 8": dict(grad_accum=8), "seq 512": dict(seq_len=512), "bf16": dict(precision="bf16")}


def _ms(x) -> str:
    return f"{x * 1e3:9.1f}" if x is not None else "        —"


def theory_time(rec, constants) -> dict | None:
    from labkit import theory
    from labkit.config import RunConfig
    from labkit.shapes import ModelShape
    cfg = RunConfig.from_dict(rec.config)
    shape = ModelShape(**rec.shape)
    padding = rec.measured.batch_has_padding
    return theory.predict_time(shape, cfg, rec.resolved["precision"], constants, rec.device["type"],
                               padding_mask=True if padding is None else padding)


def print_rows(rows: list[tuple[str, dict, float]]) -> float:
    """rows: (label, theory.time, measured step seconds). Returns the worst |relative error|."""
    print(f"{'config':44s} {'compute':>9s} {'memory':>9s} {'overhead':>9s} {'optim':>9s} {'theory':>9s} "
          f"{'measured':>9s} {'error':>8s}  regime      (ms per optimizer step; parts per micro-step)")
    worst = 0.0
    for label, t, measured in rows:
        err = t["step_s"] / measured - 1
        worst = max(worst, abs(err))
        print(f"{label:44s} {_ms(t['compute_s'])} {_ms(t['memory_s'])} {_ms(t['overhead_s'])} "
              f"{_ms(t['optimizer_s'])} {_ms(t['step_s'])} {_ms(measured)} {err:+8.1%}  {t['regime']}")
    return worst


def print_deltas(pairs: list[tuple[str, tuple, tuple]]) -> float:
    """pairs: (name, (theory a, measured a), (theory b, measured b)); delta = b / a − 1. Returns the worst gap."""
    print(f"\n{'toggle':44s} {'theory Δ':>10s} {'measured Δ':>11s} {'gap (points)':>13s}")
    worst = 0.0
    for name, (ta, ma), (tb, mb) in pairs:
        dt, dm = tb / ta - 1, mb / ma - 1
        worst = max(worst, abs(dt - dm))
        print(f"{name:44s} {dt:+10.1%} {dm:+11.1%} {(dt - dm) * 100:+13.1f}")
    return worst


def print_constants(c) -> None:
    o = ", ".join(f"{k} {v * 1e6:.1f} µs" for k, v in c.overhead_s_per_op.items())
    flops = ", ".join(f"{k} {v / 1e9:,.1f} GFLOP/s" for k, v in c.flops_per_s.items() if v)
    print(f"constants: {c.source}\n  F: {flops}\n  B: {c.bytes_per_s / 1e9:,.1f} GB/s\n  o per op: {o}")


# ---- the CPU grid ---------------------------------------------------------------------------------------------
@contextlib.contextmanager
def process_clock(on: bool):
    """While on, the runner times steps in this process's CPU time (time.process_time) instead of wall time."""
    from labkit.engine import measure
    if not on:
        yield
        return
    saved = measure.time
    measure.time = types.SimpleNamespace(perf_counter=time.process_time)
    try:
        yield
    finally:
        measure.time = saved


def cpu_grid(rounds: int, steps: int, cpu_time: bool) -> None:
    import torch
    from labkit.config import RunConfig
    from labkit.engine.calibrate import mean_of_calibrations, calibrate
    from labkit.experiment import run
    from labkit.theory import calibrated_constants
    torch.set_num_threads(1)
    clock = time.process_time if cpu_time else None
    before = calibrate(force=True, save=False, clock=clock)
    best = {}
    with process_clock(cpu_time):
        for r in range(rounds):
            for name, change in TOGGLES.items():
                rec = run(RunConfig(**{**BASE, **change}), steps=steps, warmup=1)
                if rec.status != "ok":
                    raise SystemExit(f"{name}: {rec.status} {rec.error}")
                if name not in best or rec.measured.step_time_s < best[name].measured.step_time_s:
                    best[name] = rec
            print(f"round {r + 1}/{rounds} done", flush=True)
    after = calibrate(force=True, save=False, clock=clock)
    constants = calibrated_constants(mean_of_calibrations(before, after))
    rows = [(name, theory_time(rec, constants), rec.measured.step_time_s) for name, rec in best.items()]
    print(f"\nCPU grid: tiny, {torch.get_num_threads()} thread, fastest of {rounds} rounds × "
          f"{steps - 1} timed steps, {'process CPU time' if cpu_time else 'wall time'}; measured here "
          "(stand-in: tiny random model on a CPU)")
    worst = print_rows(rows)
    t = {name: (row[1]["step_s"], row[2]) for name, row in zip(best, rows)}
    gap = print_deltas([(f"base → {name}", t["base"], t[name]) for name in TOGGLES if name != "base"])
    print(f"\nworst step-time error {worst:.1%} (goal ≤ {STEP_TIME_REL:.0%}), worst delta gap {gap * 100:.1f} points "
          f"(goal ≤ {DELTA_POINTS})")
    print_constants(constants)


# ---- the shared GPU records -------------------------------------------------------------------------------------
def gpu_records(folder: str) -> None:
    from labkit.record import read_jsonl
    from labkit.theory import data_sheet_constants
    records = []
    for path in sorted(glob.glob(os.path.join(folder, "*.jsonl"))):
        records += [(os.path.basename(path), r) for r in read_jsonl(path) if r.status == "ok"]
    if not records:
        print(f"no GPU records under {folder}")
        return
    constants = data_sheet_constants(records[0][1].device["name"])
    rows, index = [], {}
    for file, rec in records:
        c = rec.config
        label = (f"{c['model']} s{c['seq_len']} mb{c['micro_batch']} acc{c['grad_accum']} "
                 f"ckpt {'on ' if c['gradient_checkpointing'] else 'off'} {rec.resolved['precision']}")
        fitted = in_fit(rec)
        t = theory_time(rec, constants)
        rows.append((label + (" (fit)" if fitted else ""), t, rec.measured.step_time_s))
        index[(file, c["model"], c["seq_len"], c["micro_batch"], c["grad_accum"], c["gradient_checkpointing"],
               rec.resolved["precision"])] = (t["step_s"], rec.measured.step_time_s)
    print(f"\nGPU records: {folder} — {records[0][1].device['name']}, T4 profile; rows marked (fit) are the "
          "flat region the overhead constants were fitted to")
    worst = print_rows(rows)
    pairs = []
    for key, value in index.items():
        file, model, seq, mb, acc, ckpt, prec = key
        if ckpt and (file, model, seq, mb, acc, False, prec) in index:
            pairs.append((f"{model} s{seq} mb{mb} acc{acc} {prec}: checkpointing off → on",
                          index[(file, model, seq, mb, acc, False, prec)], value))
        if mb == 1 and (file, model, seq, 4, acc, ckpt, prec) in index:
            pairs.append((f"{model} s{seq} acc{acc} ckpt {ckpt}: micro-batch 1 → 4", value,
                          index[(file, model, seq, 4, acc, ckpt, prec)]))
        if seq == 512 and (file, model, 2048, mb, acc, ckpt, prec) in index:
            pairs.append((f"{model} mb{mb} acc{acc} ckpt {ckpt}: seq 512 → 2048", value,
                          index[(file, model, 2048, mb, acc, ckpt, prec)]))
        if prec == "fp32":
            for other, v in index.items():
                if other[1:6] == key[1:6] and other[6] == "fp16":
                    pairs.append((f"{model} s{seq} mb{mb} acc{acc}: fp32 → fp16", value, v))
    gap = print_deltas(pairs)
    print(f"\nworst step-time error {worst:.1%}, worst delta gap {gap * 100:.1f} points")
    print_constants(constants)


def in_fit(rec) -> bool:
    """The flat region the GPU overhead constants are fitted to: fp16, llama-3.2-1b at seq 512 and tiny at seq 128
    (every micro-batch and accumulation recorded there). Seq 2048 and the fp32 run stay out: they are predicted."""
    c = rec.config
    return rec.resolved["precision"] == "fp16" and (c["model"], c["seq_len"]) in (("llama-3.2-1b", 512),
                                                                                    ("tiny", 128))


def fit_overhead(folder: str) -> dict:
    """Least squares (relative errors) of the GPU records' flat region for two seconds-per-op: one for ops issued
    from Python (forward, recompute, the optimizer step) and one for ops the autograd engine issues (backward).
    In the flat region the host's overhead is the step (the GPU waits), so a step's time ≈ a·o_python + b·o_backward
    with a, b the dispatched-op counts the theory predicts for that config."""
    from labkit.config import RunConfig
    from labkit.record import read_jsonl
    from labkit.shapes import ModelShape
    from labkit.theory import time as tt
    rows = []
    for path in sorted(glob.glob(os.path.join(folder, "*.jsonl"))):
        for rec in read_jsonl(path):
            if rec.status != "ok" or not in_fit(rec):
                continue
            cfg, shape = RunConfig.from_dict(rec.config), ModelShape(**rec.shape)
            precision, padding = rec.resolved["precision"], bool(rec.measured.batch_has_padding)
            first = tt.dispatched_ops(shape, cfg, precision, "cuda", padding, accumulating=False)
            later = tt.dispatched_ops(shape, cfg, precision, "cuda", padding, accumulating=True)
            micro = [first] + [later] * (cfg.grad_accum - 1)
            _, tensors = tt.optimizer_work(shape, cfg)
            a = sum(m["forward"] + m["recompute"] for m in micro) + tt.optimizer_ops(tensors, precision)
            b = sum(m["backward"] for m in micro)
            rows.append((a, b, rec.measured.step_time_s))
    # minimise Σ ((a·x + b·y − t) / t)²: the 2 × 2 normal equations
    saa = sum((a / t) ** 2 for a, b, t in rows)
    sbb = sum((b / t) ** 2 for a, b, t in rows)
    sab = sum(a * b / t ** 2 for a, b, t in rows)
    sa1 = sum(a / t for a, b, t in rows)
    sb1 = sum(b / t for a, b, t in rows)
    det = saa * sbb - sab ** 2
    x, y = (sa1 * sbb - sb1 * sab) / det, (saa * sb1 - sab * sa1) / det
    errors = [(a * x + b * y) / t - 1 for a, b, t in rows]
    print(f"fit over {len(rows)} records: o_python = {x * 1e6:.1f} µs, o_backward = {y * 1e6:.1f} µs per "
          f"dispatched op; relative errors {min(errors):+.1%} … {max(errors):+.1%}")
    return {"python": x, "backward": y}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", default=DEFAULT_RECORDS, help="folder of GPU records (JSON Lines)")
    ap.add_argument("--records-only", action="store_true", help="skip the CPU grid")
    ap.add_argument("--fit", action="store_true", help="fit the GPU overhead constants to the records' flat region")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--wall", action="store_true",
                    help="time in wall-clock seconds (default: this process's CPU time, which other processes' "
                         "load on a shared machine does not stretch; the calibration uses the same clock)")
    a = ap.parse_args(argv)
    warnings.filterwarnings("ignore")
    if a.fit:
        fit_overhead(a.records)
        return
    if not a.records_only:
        cpu_grid(a.rounds, a.steps, cpu_time=not a.wall)
    gpu_records(a.records)


if __name__ == "__main__":
    main()
