"""Op counts, theory vs measured: one row per config, the aten ops one micro-batch dispatches.

    python benchmarks/op_count_table.py            # tiny, Qwen2-style and Mistral-style shapes on this device
    python benchmarks/op_count_table.py --quick    # the tiny rows only

Measured: `labkit.engine.op_count.OpCounter` on the second micro-batch of a real QLoRA step (measured.aten_ops);
theory: `labkit.theory.predict_aten_ops` from the shape and the config (theory.aten_ops). Columns: the ops that do
work (views and other metadata ops apart) in forward / recompute / backward, their total, the error of the total,
and the error of the metadata count. Last, what counting costs: one micro-batch timed with and without the
counter (a ratio; CPU time of this process, so other programs on the machine matter less).
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings

from labkit.config import PROJECTIONS, RunConfig
from labkit.experiment import run
from labkit.goals import OP_COUNT_REL
from labkit.shapes import write_check_configs

ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")
VARIANTS = [   # (label, config changes)
    ("attn, drop", dict(lora_targets=ATTENTION)),
    ("attn, no drop", dict(lora_targets=ATTENTION, lora_dropout=0.0)),
    ("all, drop", dict(lora_targets=PROJECTIONS)),
    ("all, no drop", dict(lora_targets=PROJECTIONS, lora_dropout=0.0)),
    ("attn, bf16, pad", dict(lora_targets=ATTENTION, precision="bf16", seq_len=512)),
]


def _err(pred: int, meas: int) -> float:
    return pred / meas - 1 if meas else (0.0 if pred == 0 else float("inf"))


def table(models: dict, variants=VARIANTS) -> list[dict]:
    """Run and print the grid; one row per run: model, checkpointing, variant, status, the measured and theory
    counts, the error of the total and of the metadata count (None for a run that did not finish)."""
    print(f"{'model':14s} {'ckpt':4s} {'variant':16s} {'measured f / r / b':>20s} {'total':>6s} "
          f"{'theory f / r / b':>20s} {'total':>6s} {'err':>7s} {'meta err':>8s}")
    rows = []
    for name, path in models.items():
        for label, changes in variants:
            for gc in (False, True):
                cfg = RunConfig(**{"model": path, "seq_len": 64, "micro_batch": 2, "grad_accum": 2,
                                   "gradient_checkpointing": gc, **changes})
                rec = run(cfg, steps=1, warmup=0)
                row = {"model": name, "checkpointing": gc, "variant": label, "status": rec.status,
                       "precision": (rec.get("resolved") or {}).get("precision"), "error": None, "metadata_error": None}
                rows.append(row)
                if rec.status != "ok":
                    print(name, label, rec.status, rec.error)
                    row["message"] = rec.error
                    continue
                m, t = rec.measured.aten_ops, rec.theory["aten_ops"]
                err, meta = _err(t["total"], m["total"]), _err(t["metadata"]["total"], m["metadata"]["total"])
                row.update(measured=dict(m), theory=dict(t), error=err, metadata_error=meta)
                split = "{forward:5d} /{recompute:5d} /{backward:5d}"
                print(f"{name:14s} {'on' if gc else 'off':4s} {label:16s} {split.format(**m):>20s} {m['total']:6d} "
                      f"{split.format(**t):>20s} {t['total']:6d} {err:+7.2%} {meta:+8.2%}")
    return rows


def worst(rows: list[dict]) -> float:
    """The largest |error of the total| over the rows that finished; inf if any did not."""
    if any(r["error"] is None for r in rows):
        return float("inf")
    return max(abs(r["error"]) for r in rows)


def counting_cost(repeats: int = 15) -> None:
    """One small tiny micro-batch (seq 64, micro-batch 1, checkpointing on: the ops, not the arithmetic, take the
    time), timed with and without the counter, alternately, on one thread."""
    import torch

    from labkit.engine import data, op_count
    from labkit.engine.models import load_model, tokenizer_for
    from labkit.engine.runner import forward_backward, label_tokens

    torch.set_num_threads(1)
    cfg = RunConfig(seq_len=64, micro_batch=1, grad_accum=1)
    model, src = load_model(cfg, "fp32", "cpu", "random")
    batch = next(data.batches(tokenizer_for(src), data.course_texts(), cfg.seq_len, cfg.micro_batch, True, seed=0))
    n_items = label_tokens(batch)

    def once(counter) -> float:
        t0 = time.process_time()
        forward_backward(model, batch, n_items, "cpu", "fp32", ops=counter)
        return time.process_time() - t0

    once(None)
    plain, counted, ops = [], [], 0
    for _ in range(repeats):
        plain.append(once(None))
        counter = op_count.OpCounter()
        counted.append(once(counter))
        summary = counter.summary()
        ops = summary["total"] + summary["metadata"]["total"]
    a, b = statistics.median(plain), statistics.median(counted)
    print(f"\ncounting one micro-batch (tiny, seq 64, micro-batch 1, checkpointing, one thread): {a * 1e3:.0f} ms "
          f"→ {b * 1e3:.0f} ms CPU time, ×{b / a:.2f} ({(b - a) / ops * 1e6:.0f} µs per dispatched op, {ops} ops); "
          "the runner counts one micro-batch per run, in the warm-up step")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny only")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    models = {"tiny": "tiny"}
    if not args.quick:
        models.update(write_check_configs(tempfile.mkdtemp()))
    rows = table(models)
    print(f"\nworst error of the total over the grid: {worst(rows):.2%}   (goal ≤ {OP_COUNT_REL:.0%})   shape-only "
          "weights, this device's 4-bit and attention path" + ("" if worst(rows) < float("inf") else
                                                                "; inf: a run did not finish (above)"))
    counting_cost()


if __name__ == "__main__":
    main()
