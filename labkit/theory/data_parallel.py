"""Data parallelism (DDP) in theory: memory per GPU, gradient buckets, all-reduce bytes and time, the step time of
the effective batch — and what would remove the per-GPU copy of the base (sharding), as theory only.

The lesson in one line: DDP copies, it does not share. Every rank holds the WHOLE 4-bit base, its own adapters,
gradients and optimizer state, and its own activations: memory per GPU with N GPUs is memory with one GPU (plus
DDP's bucket buffers, one more copy of the gradients: small for LoRA). More GPUs buy speed (N × the sequences per
step), never room for a bigger model. What would: sharding (FSDP / ZeRO-3), `sharded_weight_bytes`, theory only.

Notation: N ranks, G = gradient bytes (LoRA keeps fp32 adapters, so 4 bytes per trainable parameter).
    ring all-reduce: each rank sends (and receives) 2·(N−1)/N · G bytes (reduce-scatter, then all-gather)
    time ≈ 2·(N−1)/N · G / link bandwidth + 2·(N−1) · latency · buckets
    step of the effective batch ≈ one rank's step (theory.time) + that time (not overlapped: LoRA's single
    bucket is ready only at the end of the backward, so nothing is left to overlap it with)
Nothing here measures; link figures are data sheets (`LINKS`, with sources) or a labelled stand-in.
"""
from __future__ import annotations

import math
import re

from labkit.config import RunConfig
from labkit.shapes import ModelShape
from labkit.units import MiB
from labkit.theory.resident import ADAPTER_BYTES, trainable_params

DDP_BUCKET_CAP_BYTES = 25 * MiB      # torch DistributedDataParallel(bucket_cap_mb=25), the default
DDP_FIRST_BUCKET_BYTES = 1 * MiB     # torch.distributed._DEFAULT_FIRST_BUCKET_BYTES: the first bucket is small

LINKS = {   # per direction; latency: a per-message figure, an assumption (no data sheet gives one) — said so below
    "pcie3_x16": {"name": "PCIe 3.0 x16", "bytes_per_s": 15.75e9, "latency_s": 10e-6,
                  "source": "PCI-SIG PCIe 3.0: 8 GT/s a lane, 128b/130b coding = 0.985 GB/s a lane each way; "
                            "×16 = 15.75 GB/s. The T4 is a PCIe Gen3 x16 card without NVLink (NVIDIA T4 data "
                            "sheet): Kaggle's 2×T4 talk over PCIe, often through the host, so less in practice"},
    "pcie4_x16": {"name": "PCIe 4.0 x16", "bytes_per_s": 31.5e9, "latency_s": 10e-6,
                  "source": "PCI-SIG PCIe 4.0: 16 GT/s a lane, 1.97 GB/s a lane each way; ×16 = 31.5 GB/s "
                            "(A10, L4, A100 PCIe)"},
    "pcie5_x16": {"name": "PCIe 5.0 x16", "bytes_per_s": 63e9, "latency_s": 10e-6,
                  "source": "PCI-SIG PCIe 5.0: 32 GT/s a lane, 3.94 GB/s a lane each way; ×16 = 63 GB/s "
                            "(H100 PCIe without its NVLink bridge)"},
    "nvlink3": {"name": "NVLink 3 (A100 SXM)", "bytes_per_s": 300e9, "latency_s": 5e-6,
                "source": "NVIDIA A100 data sheet: NVLink 600 GB/s per GPU, both directions together"},
    "nvlink4": {"name": "NVLink 4 (H100/H200 SXM)", "bytes_per_s": 450e9, "latency_s": 5e-6,
                "source": "NVIDIA H100 data sheet: NVLink 900 GB/s per GPU, both directions together"},
    "cpu-processes": {"name": "processes on one CPU (gloo over loopback)", "bytes_per_s": 5e9, "latency_s": 50e-6,
                      "source": "a stand-in, not a link and not a data sheet: an order of magnitude for gloo's "
                                "loopback TCP between processes on one machine; the CPU figure only shows the "
                                "shape of the arithmetic"},
}
LATENCY_NOTE = "latency_s is an assumed per-message figure (a few µs for NCCL on a GPU link); no data sheet gives it"

GPU_LINKS = [(r"\bT4\b", "pcie3_x16"), (r"\bH100\b.*\bPCIe\b", "pcie5_x16"), (r"\bA100\b.*\bSXM", "nvlink3"),
             (r"\b(H100|H200)\b", "nvlink4"), (r"\b(A10G?|L4|A100)\b", "pcie4_x16")]


def link_for(device_type: str, gpu_name: str | None = None) -> dict:
    """The link a run's ranks would talk over: by GPU name (first match in GPU_LINKS), PCIe 3.0 x16 for a GPU
    not listed (labelled assumed), the CPU stand-in for processes on a CPU."""
    if device_type != "cuda":
        return {"key": "cpu-processes", **LINKS["cpu-processes"]}
    for pattern, key in GPU_LINKS:
        if gpu_name and re.search(pattern, gpu_name):
            return {"key": key, **LINKS[key]}
    return {"key": "pcie3_x16", **LINKS["pcie3_x16"], "assumed": f"{gpu_name or 'this GPU'} is not listed"}


def gradient_bytes(shape: ModelShape, cfg: RunConfig) -> int:
    """What DDP all-reduces: one fp32 gradient per trainable (LoRA) parameter; the frozen 4-bit base has none."""
    return trainable_params(shape, cfg) * ADAPTER_BYTES


def ddp_buckets(grad_bytes: int) -> int:
    """About how many buckets DDP packs the gradients into: a first 1 MiB bucket, then 25 MiB ones (whole
    parameters per bucket, so the real count can be one or two more). Tiny r=16: 0.46 MB → 1 bucket."""
    if grad_bytes <= DDP_FIRST_BUCKET_BYTES:
        return 1
    return 1 + math.ceil((grad_bytes - DDP_FIRST_BUCKET_BYTES) / DDP_BUCKET_CAP_BYTES)


def ring_allreduce_bytes(grad_bytes: int, world: int) -> float:
    """Bytes each rank sends (and receives) in a ring all-reduce of `grad_bytes`: 2·(N−1)/N · G.
    N = 2: exactly G (half in the reduce-scatter, half in the all-gather); N = 1: nothing."""
    return 2 * (world - 1) / world * grad_bytes


def allreduce_seconds(grad_bytes: int, world: int, link: dict, buckets: int = 1) -> float:
    """Bandwidth term + latency term: 2(N−1)/N·G / B + 2(N−1) ring steps · latency · buckets."""
    if world <= 1:
        return 0.0
    return ring_allreduce_bytes(grad_bytes, world) / link["bytes_per_s"] + 2 * (world - 1) * link["latency_s"] * buckets


def sharded_weight_bytes(weight_bytes: int, world: int, largest_layer_bytes: int = 0) -> float:
    """THEORY ONLY — no run of the kit does this. FSDP / ZeRO-3 split each weight across the N ranks, so a rank
    holds weight_bytes / N, plus the one layer it gathers at a time to compute with (`largest_layer_bytes`).
    This, not DDP, is what lets a model too big for one GPU train on several (FSDP + QLoRA)."""
    return weight_bytes / world + largest_layer_bytes


def predict_data_parallel(shape: ModelShape, cfg: RunConfig, memory: dict, step_time: dict | None,
                          device_type: str = "cuda", gpu_name: str | None = None) -> dict:
    """The N-process theory a record keeps under theory["data_parallel"]: `memory` is `predict_memory`'s dict
    (per rank, unchanged), `step_time` is theory.time (one rank's step), or None without device constants."""
    world = cfg.num_gpus
    grads = gradient_bytes(shape, cfg)
    buckets = ddp_buckets(grads)
    link = link_for(device_type, gpu_name)
    sync_s = allreduce_seconds(grads, world, link, buckets)
    rank_step = (step_time or {}).get("step_s")
    step_s = rank_step + sync_s if rank_step is not None else None
    tokens = world * cfg.micro_batch * cfg.grad_accum * cfg.seq_len       # 2 ranks × mb 2 × accum 2 × seq
    per_layer = (memory["quantized_weights"] / shape.layers) if shape.layers else 0
    return {
        "world_size": world,
        "effective_batch": cfg.effective_batch,
        "memory_per_rank": {"peak": memory["peak"], "weights": memory["weights"],
                            "ddp_bucket_buffers": grads if world > 1 else 0,
                            "note": "every rank holds the WHOLE 4-bit base: DDP copies the model, it does not "
                                    "share it, so memory per GPU is one GPU's (+ DDP's bucket copy of the "
                                    "gradients); more GPUs buy speed, not room"},
        "gradient_bytes": grads,
        "ddp_buckets": buckets,
        "allreduce_bytes_per_rank": ring_allreduce_bytes(grads, world),
        "link": {**link, "latency_note": LATENCY_NOTE},
        "sync_s": sync_s,
        "rank_step_s": rank_step,
        "step_s": step_s,
        "sync_share": sync_s / step_s if step_s else None,
        "tokens_per_s": tokens / step_s if step_s else None,
        "sharded_weights_per_rank": sharded_weight_bytes(memory["weights"], world, per_layer),
        "sharded_note": "FSDP / ZeRO-3 (theory only, no run of the kit shards): weights / N + one gathered layer",
    }
