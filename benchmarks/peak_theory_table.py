"""Theory peak vs measured CUDA peak, record by record: `theory.predict_memory(...)["peak"]` recomputed with this
checkout's theory from each record's config, shape, precision, padding and device, next to the measured
`torch.cuda.max_memory_allocated` (max over steps of the per-step peaks) and the theory stored in the record.

    python benchmarks/peak_theory_table.py                       # the shared H100 (T4-profile) records
    python benchmarks/peak_theory_table.py path/to/*.jsonl       # any records written by labkit.experiment.run

Goal (the issue): within 3 % for every preset and precision; within 16 MiB for `tiny`. The records do not say
which cuBLAS variables (theory.BLAS_ENV_VARS) were set; this table assumes none (torch's default workspaces).
"""
from __future__ import annotations

import glob
import os
import sys

from labkit import theory
from labkit.config import RunConfig
from labkit.goals import PEAK_REL, PEAK_TINY_BYTES, peak_goal
from labkit.record import read_jsonl
from labkit.shapes import ModelShape
from labkit.units import MiB

# the shared GPU records, in the folder shared/ beside this checkout
SHARED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "gpu-records",
                      "h100-t4-profile-2026-11-22", "*.jsonl")


def recompute_theory(rec) -> dict:
    cfg = RunConfig.from_dict(rec.config)
    shape = ModelShape(**rec.shape)
    padding = rec.measured.batch_has_padding
    dev = rec.device
    return theory.predict_memory(shape, cfg, rec.resolved["precision"],
                                 padding if padding is not None else cfg.pad_to_seq_len, dev["type"],
                                 capability=dev.get("capability"), blas_env={})


def meets_goal(rec, predicted: int, measured: int) -> bool:
    return peak_goal(rec.config["model"], measured, predicted)[0]


def label(rec, path: str) -> str:
    c = rec.config
    return (f"{os.path.basename(path).replace('.jsonl', ''):24s} {c['model']:12s} {rec.resolved['precision']:4s} "
            f"s{c['seq_len']:<4d} b{c['micro_batch']:<2d} acc{c['grad_accum']:<2d} "
            f"{'ckpt' if c['gradient_checkpointing'] else '----'}")


def main(patterns: list[str]) -> int:
    paths = sorted(p for pattern in patterns for p in glob.glob(pattern))
    print(f"{'record':70s} {'measured':>13s} {'old theory':>13s} {'old err':>8s} {'new theory':>13s} "
          f"{'new err':>8s} {'new−meas':>10s}  {'peak phase':20s} goal")
    misses = rows = 0
    for path in paths:
        for rec in read_jsonl(path):
            measured = rec.measured.peak_allocated_bytes
            if rec.status != "ok" or not measured:
                continue
            new = recompute_theory(rec)
            old = rec.theory.peak
            ok = meets_goal(rec, new["peak"], measured)
            rows += 1
            misses += not ok
            print(f"{label(rec, path):70s} {measured:13,d} {old:13,d} {old / measured - 1:+8.2%} {new['peak']:13,d} "
                  f"{new['peak'] / measured - 1:+8.2%} {(new['peak'] - measured) / MiB:+8.2f}Mi  "
                  f"{new['peak_phase']:20s} {'ok' if ok else 'MISS'}")
    print(f"\n{rows - misses}/{rows} records meet the goal (±{PEAK_REL * 100:.0f} %; tiny ±{PEAK_TINY_BYTES // MiB} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or [SHARED]))
