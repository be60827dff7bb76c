"""Theory vs measured, over a grid: one row per config, the relative error of each predicted component.

    python benchmarks/theory_error_table.py            # tiny, Qwen2-style and Mistral-style shapes on this device

Saved activations: theory (activations + logits) vs the bytes autograd saved in one micro-batch forward.
Resident: 4-bit weights, 16/32-bit weights, LoRA, gradients, optimizer state vs the live tensors.
"""
from __future__ import annotations

import itertools
import tempfile
import warnings

from labkit.config import RunConfig
from labkit.experiment import run
from labkit.goals import PARTS_REL
from labkit.shapes import write_check_configs

RESIDENT = ("quantized_weights", "unquantized_weights", "lora", "gradients", "optimizer")


def main():
    warnings.filterwarnings("ignore")
    models = {"tiny": "tiny", **write_check_configs(tempfile.mkdtemp())}
    grid = itertools.product(models, (False, True), ("fp32", "bf16"), (64, 512),
                             (("q_proj", "k_proj", "v_proj", "o_proj"), ("q_proj", "v_proj", "gate_proj", "down_proj")))
    print(f"{'model':14s} {'ckpt':4s} {'prec':4s} {'seq':>4s} {'targets':10s} {'pad':3s} "
          f"{'saved meas':>11s} {'saved theory':>12s} {'err':>8s} {'resident max err':>16s}")
    worst = 0.0
    for name, gc, prec, seq, targets in grid:
        cfg = RunConfig(model=models[name], gradient_checkpointing=gc, precision=prec, seq_len=seq, micro_batch=2,
                        grad_accum=1, lora_targets=targets)
        rec = run(cfg, steps=1, warmup=0)
        if rec.status != "ok":
            print(name, rec.status, rec.error)
            continue
        m, t = rec.measured, rec.theory
        pred = t.activations + t.logits
        err = pred / m.saved_activation_bytes - 1
        res = max(abs(getattr(t, k) / getattr(m.resident, k) - 1) for k in RESIDENT if getattr(m.resident, k))
        worst = max(worst, abs(err), res)
        print(f"{name:14s} {'on' if gc else 'off':4s} {prec:4s} {seq:4d} {'qkvo' if len(targets) == 4 and 'o_proj' in targets else 'q,v,g,d':10s} "
              f"{'yes' if m.batch_has_padding else 'no':3s} {m.saved_activation_bytes:11d} {pred:12d} "
              f"{err:+8.3%} {res:16.3%}")
    print(f"\nworst relative error over the grid: {worst:.4%}   (goal ≤ {PARTS_REL:.0%})   labels: shape-only weights, "
          f"{rec.device['type']}")


if __name__ == "__main__":
    main()
