"""One process × micro-batch 4 vs 2 processes × micro-batch 2 (DDP, gloo): the same effective batch, measured per
rank beside the theory.

    python benchmarks/data_parallel_table.py                 # tiny, seq 128, accumulation 2, 4 steps
    python benchmarks/data_parallel_table.py --calibrate     # first measure this CPU's time constants (labkit
                                                             # calibrate), so the theory has step times too

On a CPU the two ranks are gloo processes (labelled cpu-processes): a stand-in that shows the arithmetic and the
synchronisation for real, not GPU figures. Each rank gets cores ÷ 2 threads, so one rank's step is slower than
half of the one-process step; the sync time includes the wait for the slower rank (see rank_context).
Printed, one row per rank: step time and sync time (measured | theory), the sync share of the step, saved
activations and resident bytes (measured | theory), and the loss per optimizer step (equal in both runs).
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

BASE = dict(model="tiny", seq_len=128, grad_accum=2, lora_dropout=0.0, optim="adamw")


def _s(x, unit=1.0, fmt="{:.3g}") -> str:
    return "—" if x is None else fmt.format(x * unit)


def _mib(x) -> str:
    return "—" if x is None else f"{x / 2 ** 20:.2f}"


def rows(record) -> list[list[str]]:
    """One row per rank (the top-level measured for one process)."""
    t, m = record.theory, record.measured
    dp = t.data_parallel or {}
    rank_step = (t.time or {}).get("step_s")
    sync_theory = dp.get("sync_s", 0.0)
    ranks = record.ranks or [{**m.to_dict(), "rank": 0, "sync_time_s": None}]   # per-rank parts stay dicts
    resident_theory = t.weights + t.lora + t.gradients + t.optimizer
    out = []
    for r in ranks:
        resident = sum((r.get("resident") or {}).values()) or None
        step, sync = r.get("step_time_s"), r.get("sync_time_s")
        out.append([f"{record.config['num_gpus']} × mb {record.config['micro_batch']}", str(r["rank"]),
                    f"{_s(step)} | {_s(rank_step + sync_theory if rank_step else None)}",
                    f"{_s(sync, 1e3)} | {_s(sync_theory if dp else None, 1e3)}",
                    _s(sync / step if sync is not None and step else None, 100, "{:.1f}%"),
                    f"{_mib(r.get('saved_activation_bytes'))} | {_mib(t.activations + t.logits)}",
                    f"{_mib(resident)} | {_mib(resident_theory)}",
                    ", ".join(f"{x:.5f}" for x in m.loss or [])])
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=BASE["seq_len"])
    parser.add_argument("--calibrate", action="store_true", help="measure this CPU's time constants first")
    args = parser.parse_args(argv)
    import labkit
    if args.calibrate:
        from labkit.engine.calibrate import calibrate
        calibrate(force=True)
    base = labkit.RunConfig(**{**BASE, "seq_len": args.seq_len})
    one = labkit.run(base.replace(micro_batch=4, num_gpus=1), steps=args.steps, weights="random")
    two = labkit.run(base.replace(micro_batch=2, num_gpus=2), steps=args.steps, weights="random")
    head = ["run", "rank", "step s (meas|theory)", "sync ms (meas|theory)", "sync share", "saved MiB (m|t)",
            "resident MiB (m|t)", "loss per step"]
    table = [head] + rows(one) + rows(two)
    widths = [max(len(row[i]) for row in table) for i in range(len(head))]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)))
    print(f"labels (2 processes): {', '.join(two['labels'])}; status {one['status']} / {two['status']}")
    slow = max(r["step_time_s"] for r in two.ranks)
    print(f"effective batch {one['config']['micro_batch'] * one['config']['grad_accum']} both ways; step time "
          f"2 processes ÷ 1 process = {slow / one.measured.step_time_s:.2f} (slowest rank); tokens/s "
          f"{one.measured.tokens_per_s:.0f} → {two.measured.tokens_per_s:.0f}")
    worst = max(abs(a - b) / abs(b) for a, b in zip(two.measured.loss, one.measured.loss))
    print(f"largest relative loss difference: {worst:.1e}")
    dp = two.theory.data_parallel
    print(f"theory: {dp['gradient_bytes']:,} gradient bytes in {dp['ddp_buckets']} bucket(s), "
          f"{dp['allreduce_bytes_per_rank']:,.0f} bytes a rank on the wire over {dp['link']['name']} "
          f"({dp['link']['source'].split(':')[0]}); every rank holds the whole base — "
          f"{dp['memory_per_rank']['weights']:,} bytes each")
    return 0


if __name__ == "__main__":
    sys.exit(main())
