"""How much of the CPU time theory is a bare call counted twice: the bare calls and the grid measured in one run,
against this machine's calibration (`labkit.calibrate()`: measured once, then cached).

    python benchmarks/dispatch_double_count.py              # torch's default threads, wall clock, 3 rounds
    python benchmarks/dispatch_double_count.py --rounds 5

The calibration prices work by timing whole calls: a 64×64 matmul, a copy or an elementwise op of 64 KiB. Each of
those times holds the cost of one bare call (Python → the dispatcher → the kernel's entry) besides the work. The
time theory then adds `o`, the seconds per dispatched op that the probe model measured, which holds that same bare
call again. At the small sizes the tiny model's ops have, this can count a few microseconds twice per op.

Printed, measured in this run:
1. the bare call (1×1 matmul, 1-byte copy, 1-element multiply, the fastest of 7 × 1,000 calls) and its share of
   each calibrated time at the smallest sizes;
2. the tiny grid (the lab's base config and one toggle at a time): measured step time (fastest of `--rounds`
   interleaved rounds) beside the theory as it is and the theory with the bare call taken out of the matmul, copy
   and elementwise rates (a call's time less the bare call, never below a tenth of it; the attention, dropout and
   dequantise rates are left as measured), and each toggle's delta in both. The theory is told whether each
   config's batches had padding, as a record's theory is.
"""
from __future__ import annotations

import argparse
import copy
import warnings

from time_theory_table import BASE, TOGGLES as TABLE_TOGGLES     # the grid benchmarks/time_theory_table.py times

# fp32 only (bf16's error on a CPU is another matter: its calibrated matmuls), and seq 256 between 128 and 512
TOGGLES = {**{k: v for k, v in TABLE_TOGGLES.items() if k != "bf16"}, "seq 256": dict(seq_len=256)}


def bare_calls(repeats: int = 7, inner: int = 1000) -> dict:
    """Seconds of one bare call of each calibrated kind of op: {"matmul", "copy", "elementwise"}."""
    import torch
    from labkit.engine.calibration_probes import best_time
    cpu = torch.device("cpu")
    a, x, byte = torch.randn(1, 1), torch.ones(1), torch.ones(1, dtype=torch.uint8)
    return {"matmul": best_time(lambda: a @ a, cpu, repeats, inner),
            "copy": best_time(byte.clone, cpu, repeats, inner),
            "elementwise": best_time(lambda: x * x, cpu, repeats, inner)}


def without_bare_call(calibration: dict, bare: dict) -> dict:
    """The calibration with one bare call taken out of the time of every call it timed (floor: a tenth of it)."""
    def fix(curve, seconds, units):
        return [[size, units(size) / max(units(size) / rate - seconds, 0.1 * units(size) / rate)]
                for size, rate in curve]
    c = copy.deepcopy(calibration)
    c["flops_per_s_by_size"] = {p: fix(v, bare["matmul"], lambda n: 2 * n ** 3)     # n×n @ n×n: 2·n³ FLOPs
                                for p, v in c["flops_per_s_by_size"].items()}
    c["bytes_per_s_by_size"] = fix(c["bytes_per_s_by_size"], bare["copy"], lambda b: b)
    c["elementwise_bytes_per_s_by_size"] = {p: fix(v, bare["elementwise"], lambda b: b)
                                            for p, v in c["elementwise_bytes_per_s_by_size"].items()}
    return c


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds of the grid; each config keeps its "
                                                          "fastest")
    args = ap.parse_args()
    if args.rounds < 1:
        ap.error("--rounds must be at least 1")
    warnings.filterwarnings("ignore")
    import torch

    import labkit
    from labkit import theory
    from labkit.config import RunConfig
    from labkit.shapes import resolve_shape

    calibration = labkit.calibrate()
    bare = bare_calls()
    print(f"torch threads: {torch.get_num_threads()}; calibration: {calibration.get('source', 'this machine')}")
    print("bare call: " + ", ".join(f"{k} {v * 1e6:.2f} µs" for k, v in bare.items()) + "; o per op: "
          + ", ".join(f"{k} {v * 1e6:.1f} µs" for k, v in calibration["overhead_s_per_op"].items()))
    for precision, curve in calibration["flops_per_s_by_size"].items():
        print(f"  {precision} matmul, the bare call's share of a call: "
              + ", ".join(f"n={n} {bare['matmul'] / (2 * n ** 3 / rate):.0%}" for n, rate in curve[:3]))

    def shares(curve, seconds):                       # sizes in bytes moved (a copy: 2·n, `a * b`: 3·n)
        return ", ".join(f"{b // 1024} KiB {seconds / (b / rate):.0%}" for b, rate in curve[:3])

    print("  copy (bytes moved): " + shares(calibration["bytes_per_s_by_size"], bare["copy"]))
    for precision, curve in calibration["elementwise_bytes_per_s_by_size"].items():
        print(f"  {precision} elementwise (bytes moved): " + shares(curve, bare["elementwise"]))

    as_is = theory.calibrated_constants(calibration)
    once = theory.calibrated_constants(without_bare_call(calibration, bare))
    shape = resolve_shape("tiny")
    measured, padding = {name: [] for name in TOGGLES}, {}
    for _ in range(args.rounds):                      # interleaved: a slow moment of the machine hits every config
        for name, change in TOGGLES.items():
            rec = labkit.run(RunConfig(**{**BASE, **change}), steps=3, warmup=1, progress=False)
            if rec.status != "ok":
                raise SystemExit(f"{name}: the run ended {rec['status']}: {rec['error']}")
            measured[name].append(rec.measured.step_time_s)
            padding[name] = bool(rec.measured.batch_has_padding)
    rows = {}
    print(f"\n{'config':18s} {'measured':>9s} {'theory':>9s} {'error':>7s} {'bare once':>9s} {'error':>7s}   (ms)")
    for name, change in TOGGLES.items():
        cfg = RunConfig(**{**BASE, **change})
        m = min(measured[name])
        t0 = theory.predict_time(shape, cfg, "fp32", as_is, "cpu", padding[name])["step_s"]
        t1 = theory.predict_time(shape, cfg, "fp32", once, "cpu", padding[name])["step_s"]
        rows[name] = (m, t0, t1)
        print(f"{name:18s} {m * 1e3:9.1f} {t0 * 1e3:9.1f} {t0 / m - 1:+7.1%} {t1 * 1e3:9.1f} {t1 / m - 1:+7.1%}")
    m0, a0, b0 = rows["base"]
    print(f"\n{'toggle':18s} {'measured':>9s} {'theory':>9s} {'bare once':>9s}")
    for name in list(TOGGLES)[1:]:
        m, a, b = rows[name]
        print(f"{name:18s} {m / m0 - 1:+9.0%} {a / a0 - 1:+9.0%} {b / b0 - 1:+9.0%}")


if __name__ == "__main__":
    main()
