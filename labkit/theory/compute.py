"""Compute: the FLOPs of one optimizer step and the seconds they take at a data-sheet peak."""
from __future__ import annotations

from labkit.config import RunConfig
from labkit.shapes import ModelShape
from labkit.theory.device_constants import data_sheet
from labkit.theory.resident import trainable_params


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
    """Seconds one step would take at the GPU's data-sheet peak (`device_constants.DATA_SHEETS`, the one list of
    peaks); None where no peak is known (CPUs) or the GPU has no such unit (bf16 on a T4). A floor no real run
    reaches: small ops and dispatch overhead keep runs far from it (`labkit.theory.time` says how far)."""
    sheet = data_sheet(gpu_name)
    peak = (sheet or {}).get("flops_per_s", {}).get(precision)
    return flops / peak if peak else None
