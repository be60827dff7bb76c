"""Op counts: how many aten ops one micro-batch dispatches, predicted from the architecture and the config.

    predict_aten_ops(shape, cfg, precision, device_type="cpu", padding_mask=True, accumulating=False) -> dict

One micro-batch = the model's forward (loss included), the checkpoint recompute and the backward; the loss
scaling, the optimizer step and zero_grad are not in it. The result (what a record keeps under theory.aten_ops):

    {"forward": int, "recompute": int, "backward": int, "total": int,   # ops that do work (launch a kernel)
     "metadata": {"forward", "recompute", "backward", "total"},         # views, aliases, detach: a dispatch each,
                                                                        # no kernel, no bytes moved
     "by_kind": {kind: {"forward", "recompute", "backward", "total"}},  # every kind in OP_KINDS, metadata included
     "by_op": {op name: {phase: count}},                                # names as the measurement writes them
     "device_path": "cpu" | "cuda", "accumulating": bool}

`total` (and each phase) counts the ops that do work; `metadata` is kept apart. Compare `total` with
measured.aten_ops["total"]: both leave the views out.

Kinds (OP_KINDS), for the time model's per-kind costs:
    matmul       mm, addmm, bmm and bitsandbytes' gemm_4bit (a 4-bit weight dequantised and multiplied in one op)
    attention    the fused scaled-dot-product attention kernels, forward and backward
    elementwise  mul, add, neg, pow, rsqrt, silu, dropout's bernoulli_ and div_, their backward formulas
    reduction    mean, sum, log-softmax, nll-loss, and their backward ops
    dequant      bitsandbytes' dequantize_4bit and dequantize_blockwise (backward re-dequantises the weight)
    copy         casts (_to_copy), clone, cat, padding, embedding, fills and allocations (empty_like, ones_like)
    metadata     view, _unsafe_view, t, transpose, slice, unsqueeze, expand, alias, detach

Inputs that change the count: the decoder layout (layers, biases), the LoRA targets, dropout on or off, 4-bit or
not, checkpointing, the precision (autocast adds casts), and `device_type`: the attention op's name differs by
device, and so may the 4-bit path (see `device_path`). `accumulating`: a micro-batch after the first of an
accumulation cycle adds each adapter's gradient into .grad (one add_ per trainable tensor) instead of storing it.
"""
from __future__ import annotations

from labkit.config import RunConfig
from labkit.shapes import ModelShape

PHASES = ("forward", "recompute", "backward")
OP_KINDS = ("matmul", "attention", "elementwise", "reduction", "dequant", "copy", "metadata")


def predict_aten_ops(shape: ModelShape, cfg: RunConfig, precision: str, device_type: str = "cpu",
                     padding_mask: bool = True, accumulating: bool = False) -> dict:
    """The aten ops one micro-batch dispatches (see the module docstring for the keys)."""
    raise NotImplementedError("op-count recipes are being written")
