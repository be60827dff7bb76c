"""Compute: the FLOPs of one optimizer step and the seconds they take at a data-sheet peak."""
from __future__ import annotations

import re

from labkit.config import RunConfig
from labkit.shapes import ModelShape
from labkit.theory.resident import trainable_params


PEAK_FLOPS = [  # (GPU name pattern, dense peaks in FLOP/s from the vendors' data sheets); first match wins
    (r"\bT4\b", {"fp16": 65e12, "bf16": None, "fp32": 8.1e12}),
    (r"\bA100\b", {"fp16": 312e12, "bf16": 312e12, "fp32": 19.5e12}),
    (r"\bA10\b", {"fp16": 125e12, "bf16": 125e12, "fp32": 31.2e12}),
    (r"\bL4\b", {"fp16": 121e12, "bf16": 121e12, "fp32": 30.3e12}),
    (r"\bH100\b.*\bPCIe\b", {"fp16": 756e12, "bf16": 756e12, "fp32": 51e12}),
    (r"\bH100\b", {"fp16": 989e12, "bf16": 989e12, "fp32": 67e12}),
    (r"\bH200\b", {"fp16": 989e12, "bf16": 989e12, "fp32": 67e12}),
]


def predict_step_flops(shape: ModelShape, cfg: RunConfig) -> dict:
    """FLOPs of one optimizer step (grad_accum micro-batches), following the course brief's compute facts.

    forward  F = 2·T·(N_linear + N_lora + N_head) + 4·b·s²·(heads·hd)·L   (matmuls + attention scores/values)
    backward: the base is frozen, so only input gradients flow through it: ≈ 1·F for the matmuls, plus the
              adapters' weight gradients (2·T·N_lora) and attention's extra backward (another 4·b·s²·heads·hd·L).
    checkpointing adds one more forward of the decoder layers (not the head).
    For a full fine-tune backward is ≈ 2·F, so recomputation costs +33%; with a frozen base it costs ≈ +50%.
    """
    b, s = cfg.micro_batch, cfg.seq_len
    T = b * s
    n_linear = sum(d_in * d_out for d_in, d_out in shape.linear_dims().values()) * shape.layers
    n_lora = trainable_params(shape, cfg)
    n_head = shape.vocab * shape.hidden
    attn = 4 * b * s * s * shape.heads * shape.hd * shape.layers
    layers_fwd = 2 * T * (n_linear + n_lora) + attn
    forward = layers_fwd + 2 * T * n_head
    backward = forward + 2 * T * n_lora + attn
    recompute = layers_fwd if cfg.gradient_checkpointing else 0
    per_micro = forward + backward + recompute
    return {"forward": forward * cfg.grad_accum, "backward": backward * cfg.grad_accum,
            "recompute": recompute * cfg.grad_accum, "step": per_micro * cfg.grad_accum,
            "tokens": T * cfg.grad_accum}


def step_time_at_peak(flops: float, gpu_name: str | None, precision: str) -> float | None:
    """Seconds one step would take at the GPU's data-sheet peak; None where no peak is known (CPUs).
    Real runs reach a fraction of it; the course compares ratios, which that fraction cancels out of."""
    if not gpu_name:
        return None
    for pattern, peaks in PEAK_FLOPS:
        if re.search(pattern, gpu_name):
            peak = peaks.get(precision)
            return flops / peak if peak else None
    return None
