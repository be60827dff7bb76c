"""CUDA facts: what the caching allocator counts besides the tensors — cuBLAS workspaces, 512-byte rounding,
paged optimizer state — and the resident tensors as the allocator sees them. Unverified on a CPU: there is
no allocator to read."""
from __future__ import annotations

import math
import re

from labkit.config import DTYPE_BYTES, RunConfig
from labkit.shapes import ModelShape
from labkit.theory.resident import ADAM8_BLOCK, ADAM8_MIN_NUMEL, NESTED_BLOCK, NF4_BLOCK


CUDA_BLOCK = 512             # c10/cuda/CUDACachingAllocator.cpp: kMinBlockSize, every request is rounded up to it
PAGED_MIN_NUMEL = 100_000    # bitsandbytes Optimizer8bit.get_state_buffer: paged (managed) buffers from 1e5 values
BLAS_THREADS = 2             # forward on the Python thread, backward on autograd's device thread: two handles
BLAS_ENV_VARS = ("CUBLAS_WORKSPACE_CONFIG", "CUBLASLT_WORKSPACE_SIZE", "TORCH_CUBLASLT_UNIFIED_WORKSPACE")


def _env_flag(value: str | None) -> bool | None:
    """c10::utils::check_env: 1/ON/YES/TRUE → True, 0/OFF/NO/FALSE → False, unset or anything else → None."""
    if value is None:
        return None
    v = value.strip().upper()
    return True if v in ("1", "ON", "YES", "TRUE") else False if v in ("0", "OFF", "NO", "FALSE") else None


def cublas_workspace_bytes(capability: tuple[int, int] | list | None, blas_env: dict | None = None) -> int:
    """Bytes of one cuBLAS workspace, as torch 2.11 sizes it (aten/src/ATen/cuda/CublasHandlePool.cpp,
    `parseChosenWorkspaceSize`):

    - CUBLAS_WORKSPACE_CONFIG set: the sum of SIZE KiB × COUNT over its ":SIZE:COUNT" pairs
      (":4096:8" → 4096 KiB × 8 = 32 MiB; ":16:8" → 128 KiB); unparseable → the default, with a warning;
    - else ":4096:8" = 32 MiB on Hopper (major 9; PR #89027) and Blackwell (10, 11, 12; PR #175344, 2026-02), and
      ":4096:2:16:8" = 4096 KiB × 2 + 16 KiB × 8 = 8 MiB + 128 KiB elsewhere (T4 7.5, A100 8.0, L4 8.9)."""
    default = 4096 * 8 * 1024 if capability and capability[0] in (9, 10, 11, 12) else 4096 * 1024 * 2 + 16 * 1024 * 8
    config = (blas_env or {}).get("CUBLAS_WORKSPACE_CONFIG")
    if config is None:
        return default
    pairs = re.findall(r":([0-9]+):([0-9]+)", config)
    return sum(int(size) * 1024 * int(count) for size, count in pairs) if pairs else default


def cublaslt_workspace_bytes(capability, blas_env: dict | None = None) -> int:
    """Bytes of one cuBLASLt workspace besides cuBLAS's, as in torch 2.11 (same file): `getCUDABlasLtWorkspace`
    shares the cuBLAS workspace only when TORCH_CUBLASLT_UNIFIED_WORKSPACE is set true (PR #175879, 2026-03,
    made sharing the default later); otherwise it allocates its own per (handle, stream) through the caching
    allocator, of CUBLASLT_WORKSPACE_SIZE KiB (default 1024 KiB = 1 MiB), capped at the cuBLAS size unless the
    variable is set false (`getCUDABlasLtWorkspaceSize`, PR #168175). Which matmuls take the Lt path is not derived
    here: the H100 records carry this 2 × 1 MiB at every size (benchmarks/peak_theory_table.py)."""
    env = blas_env or {}
    unified = _env_flag(env.get("TORCH_CUBLASLT_UNIFIED_WORKSPACE"))
    if unified:
        return 0
    try:
        size = int(env.get("CUBLASLT_WORKSPACE_SIZE", 1024)) * 1024
    except ValueError:
        size = 1024 * 1024                                  # torch warns and keeps the default
    return size if unified is False else min(size, cublas_workspace_bytes(capability, env))


def cuda_workspace_bytes(device_type: str, capability=None, blas_env: dict | None = None) -> int:
    """cuBLAS (+ cuBLASLt) workspaces alive during a step on CUDA, 0 elsewhere.

    torch allocates one workspace per (cuBLAS handle, stream) through the caching allocator
    (`CUDACachingAllocator::get()->allocate` in CublasHandlePool.cpp) and keeps it in a map for the life of the
    process, so it counts in `memory_allocated`; handles are per thread (`getCurrentCUDABlasHandle`: a thread-local
    PoolWindow). The forward matmuls run on the Python thread and the backward ones on autograd's CUDA device
    thread: 2 handles. On an H100: 2 × (32 MiB + 1 MiB) = 66 MiB. (The very first step of a process can peak before
    the backward thread's first matmul: its workspace then misses from that step's peak, not from later ones.)
    Unverified on a CPU; the H100 records show +66 MiB at every size (see benchmarks/peak_theory_table.py)."""
    if device_type != "cuda":
        return 0
    per_thread = cublas_workspace_bytes(capability, blas_env) + cublaslt_workspace_bytes(capability, blas_env)
    return BLAS_THREADS * per_thread          # H100: 2 × (32 MiB + 1 MiB) = 66 MiB; T4: 2 × (8.125 + 1) MiB


def cuda_rounded(nbytes: int) -> int:
    """The size the CUDA caching allocator counts for a request: rounded up to 512 B (`round_size`, kMinBlockSize),
    so a 4-byte tensor counts 512 B. (A block it chooses not to split can count up to 1 MiB more: not modelled.)"""
    return max(1, math.ceil(nbytes / CUDA_BLOCK)) * CUDA_BLOCK


def resident_tensors(shape: ModelShape, cfg: RunConfig, precision: str) -> dict[str, list[int]]:
    """The byte size of every resident tensor, per component; each list sums to the component's bytes
    (`weight_bytes`, the LoRA and gradient sizes, `optimizer_bytes`). The allocator rounds each one (`cuda_rounded`).
    Optimizer tensors that live outside the caching allocator are listed under "outside_allocator": AdamW's step
    counters (CPU scalars unless capturable/fused, torch/optim/adamw.py) and paged 8-bit state buffers of 1e5 values
    or more (cudaMallocManaged, bitsandbytes `get_state_buffer`)."""
    c = DTYPE_BYTES[precision]
    dims = shape.linear_dims()
    out: dict[str, list[int]] = {"quantized_weights": [], "unquantized_weights": [], "lora": [], "gradients": [],
                                 "optimizer": [], "outside_allocator": []}
    for _ in range(shape.layers):
        for d_in, d_out in dims.values():
            n = d_in * d_out
            if cfg.quant != "nf4":
                out["unquantized_weights"].append(n * c)
                continue
            blocks = math.ceil(n / NF4_BLOCK)        # data, 8-bit absmax, nested absmax, code book, offset, NF4 code
            out["quantized_weights"] += [math.ceil(n / 2), blocks, math.ceil(blocks / NESTED_BLOCK) * 4, 256 * 4,
                                         4, 16 * 4]
        if shape.qkv_bias:
            out["unquantized_weights"] += [n_out * c for _, n_out in (dims["q_proj"], dims["k_proj"], dims["v_proj"])]
    out["unquantized_weights"] += [shape.vocab * shape.hidden * c] * (1 if shape.tied else 2)
    out["unquantized_weights"] += [shape.hidden * c] * (2 * shape.layers + 1)
    adapters = [cfg.lora_r * d for t in cfg.lora_targets for d in dims[t]] * shape.layers
    out["lora"] = [4 * n for n in adapters]
    out["gradients"] = [4 * n for n in adapters]
    paged = cfg.optim == "paged_adamw_8bit"
    for n in adapters:
        if cfg.optim == "adamw":
            out["optimizer"] += [4 * n, 4 * n]
            out["outside_allocator"].append(4)
            continue
        states = [4 * n] * 2 if n < ADAM8_MIN_NUMEL else [n] * 2
        (out["outside_allocator"] if paged and n >= PAGED_MIN_NUMEL else out["optimizer"]).extend(states)
        if n >= ADAM8_MIN_NUMEL:
            out["optimizer"] += [4 * math.ceil(n / ADAM8_BLOCK)] * 2
    if cfg.optim != "adamw" and any(n >= ADAM8_MIN_NUMEL for n in adapters):
        out["optimizer"] += [256 * 4] * 2                                     # the two quantile maps
    return out


def resident_at_peak(shape: ModelShape, cfg: RunConfig, precision: str, device_type: str) -> tuple[int, int]:
    """(resident bytes, allocator rounding) as the device counts them during a step: weights, adapters and
    optimizer state (gradients are counted per phase, as they exist). On CUDA the tensors outside the caching
    allocator are left out and every tensor the allocator holds (with the batch's, and the gradients' from the 2nd
    micro-batch on) is rounded to 512 B; on a CPU nothing is paged and nothing is rounded."""
    tensors = resident_tensors(shape, cfg, precision)
    kept = ["quantized_weights", "unquantized_weights", "lora", "optimizer"]
    if device_type != "cuda":
        return sum(sum(tensors[k]) for k in kept + ["outside_allocator"]), 0
    resident = sum(sum(tensors[k]) for k in kept)
    counted = [n for k in kept + (["gradients"] if cfg.grad_accum > 1 else []) for n in tensors[k]]
    counted += [cfg.micro_batch * cfg.seq_len * 8] * 3 * cfg.grad_accum           # the batch tensors
    return resident, sum(cuda_rounded(n) - n for n in counted)
