"""The theory: bytes and FLOPs of one QLoRA step, predicted from shapes alone.

One room, five parts: `resident` (weights, adapters, gradients, optimizer state), `activations` (what autograd
saves), `cuda` (what the CUDA allocator adds), `peak` (the largest moment, and the whole budget), `compute`
(FLOPs). `predict` joins them into what a record keeps under "theory"; every name is importable from here.

Nothing here measures. Every term is a formula in the model shape (h, i, L, heads, V) and the run config
(b = micro-batch, s = seq_len, r = LoRA rank, c = bytes per compute-dtype element). `predict_memory` returns the
components the lessons chart, and `predict_step_flops` the compute that the time deltas come from.

Notation used in the comments: T = b·s tokens in a micro-batch; c = 4 (fp32) or 2 (fp16/bf16); LoRA adapters are
kept in fp32 by peft (4 bytes per element), whatever c is.

Time (`time`, with `device_constants`): the seconds of a step split into compute, memory bandwidth and overhead,
from the FLOPs, bytes and op counts above and a device's F, B and o, which come in as data (a calibration of the
machine, or a GPU's data sheet), never from the run being predicted.

How the activation terms were derived: by reading what each op saves for backward in transformers' Llama code
(RMSNorm, SDPA attention, SwiGLU MLP), peft's LoRA Linear and bitsandbytes' 4-bit matmul, and listing the tensors
autograd keeps (`labkit.engine.measure.saved_activation_bytes` counts the same thing from the other side; a test checks the
two agree). The source lesson's simple rule b·s·h·L·2 is kept as its own line: it is exactly what full per-layer
checkpointing keeps in 16-bit, and far less than what a layer saves without it.

How the peak was derived: backward finishes the loss and the head before it reaches any decoder layer, so the
logit buffers and a (recomputed) layer never coexist. `peak_phases` lists what is alive at each candidate moment
(forward end, loss backward, final-norm backward, a layer's MLP backward, an MLP adapter's forward), read op by
op and checked on a CPU with `labkit.engine.measure.LiveTensorMeter` (tests/test_theory_vs_measured.py); the peak is the
largest, on top of the resident state, the batch and — on CUDA only — the cuBLAS workspaces and the allocator's
512-byte rounding (`cuda_workspace_bytes`, `cuda_rounded`), checked against H100 records
(benchmarks/peak_theory_table.py).

Op counts (`ops`, with `op_recipes` and `op_tape`): the aten ops one micro-batch dispatches in forward, recompute
and backward, by kind, from recipes that follow the model's source op by op (`predict_aten_ops`); checked against
the ops a run counts (`labkit.engine.op_count`, tests/test_op_counts.py).

Data parallelism (`data_parallel`): N ranks under DDP. Memory per GPU does not change (every rank holds the whole
4-bit base); the gradients are all-reduced over a link (bytes and seconds from a data sheet); sharding (FSDP/ZeRO-3)
is given as theory only.
"""
from __future__ import annotations

from labkit.theory.resident import (ADAM8_BLOCK, ADAM8_MIN_NUMEL, ADAPTER_BYTES, NESTED_BLOCK, NF4_BLOCK,
                                    lora_params_per_layer, nf4_linear_bytes, optimizer_bytes, trainable_params,
                                    weight_bytes)  # noqa: F401
from labkit.theory.activations import (ActivationBreakdown, dropout_mask_bytes, logits_saved, logits_transient,
                                       recompute_bytes, saved_activations, simple_rule_activations)  # noqa: F401
from labkit.theory.cuda import (BLAS_ENV_VARS, BLAS_THREADS, CUDA_BLOCK, PAGED_MIN_NUMEL, cublas_workspace_bytes,
                                cublaslt_workspace_bytes, cuda_rounded, cuda_workspace_bytes, resident_at_peak,
                                resident_tensors)  # noqa: F401
from labkit.theory.peak import (batch_bytes, checkpoint_shared_inputs, dequantized_weight_bytes,
                                mlp_lora_forward_bytes, peak_phases, predict_memory)  # noqa: F401
from labkit.theory.compute import predict_step_flops, step_time_at_peak  # noqa: F401
from labkit.theory.ops import OP_KINDS, op_kind, predict_aten_ops  # noqa: F401
from labkit.theory.device_constants import (DATA_SHEETS, GPU_RECORD_OVERHEAD, DeviceConstants,
                                            calibrated_constants, data_sheet, data_sheet_constants,
                                            device_constants)  # noqa: F401
from labkit.theory.time import micro_step_work, overhead_knee, predict_time, time_for_record  # noqa: F401
from labkit.theory.data_parallel import (LINKS, allreduce_seconds, ddp_buckets, gradient_bytes, link_for,
                                         predict_data_parallel, ring_allreduce_bytes,
                                         sharded_weight_bytes)  # noqa: F401
from labkit.config import RunConfig
from labkit.shapes import ModelShape


def predict(shape: ModelShape, cfg: RunConfig, precision: str, padding_mask: bool = True,
            gpu_name: str | None = None, device_type: str | None = None, capability=None,
            blas_env: dict | None = None, accumulating: bool | None = None,
            saved_tensor_hooks: bool | None = None) -> dict:
    """Memory, compute and op counts in one dict: what `experiment` puts under record["theory"]. device_type
    defaults to "cuda" when a GPU name is given, else "cpu".

    `aten_ops` predicts the micro-batch whose ops a run counts: the second of the first step when grad_accum > 1
    (its gradients add into .grad: `accumulating`), else the first, which runs under the saved-bytes meter's
    hooks (`saved_tensor_hooks`); both default to that rule, read from the config."""
    device_type = device_type or ("cuda" if gpu_name else "cpu")
    out = predict_memory(shape, cfg, precision, padding_mask, device_type, capability, blas_env)
    flops = predict_step_flops(shape, cfg)
    out["step_flops"] = flops["step"]
    out["step_flops_breakdown"] = flops
    out["step_time_at_peak_s"] = step_time_at_peak(flops["step"], gpu_name, precision)
    out["aten_ops"] = predict_aten_ops(
        shape, cfg, precision, device_type, padding_mask,
        accumulating=cfg.grad_accum > 1 if accumulating is None else accumulating,
        saved_tensor_hooks=cfg.grad_accum == 1 if saved_tensor_hooks is None else saved_tensor_hooks)
    return out
