"""The theory: bytes and FLOPs of one QLoRA step, predicted from shapes alone.

Nothing here measures. Every term is a formula in the model shape (h, i, L, heads, V) and the run config
(b = micro-batch, s = seq_len, r = LoRA rank, c = bytes per compute-dtype element). `predict_memory` returns the
components the lessons chart, and `predict_step_flops` the compute that the time deltas come from.

Notation used in the comments: T = b·s tokens in a micro-batch; c = 4 (fp32) or 2 (fp16/bf16); LoRA adapters are
kept in fp32 by peft (4 bytes per element), whatever c is.

How the activation terms were derived: by reading what each op saves for backward in transformers' Llama code
(RMSNorm, SDPA attention, SwiGLU MLP), peft's LoRA Linear and bitsandbytes' 4-bit matmul, and listing the tensors
autograd keeps (`labkit.engine.measure.saved_activation_bytes` counts the same thing from the other side; a test checks the
two agree). The seed's simple rule b·s·h·L·2 is kept as its own line: it is exactly what full per-layer
checkpointing keeps in 16-bit, and far less than what a layer saves without it.

How the peak was derived: backward finishes the loss and the head before it reaches any decoder layer, so the
logit buffers and a (recomputed) layer never coexist. `peak_phases` lists what is alive at each candidate moment
(forward end, loss backward, final-norm backward, a layer's MLP backward, an MLP adapter's forward), read op by
op and checked on a CPU with `labkit.engine.measure.LiveTensorMeter` (tests/test_theory_vs_measured.py); the peak is the
largest, on top of the resident state, the batch and — on CUDA only — the cuBLAS workspaces and the allocator's
512-byte rounding (`cuda_workspace_bytes`, `cuda_rounded`), checked against H100 records
(benchmarks/peak_theory_table.py).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

from labkit.config import DTYPE_BYTES, RunConfig
from labkit.shapes import ModelShape

ADAPTER_BYTES = 4           # peft keeps LoRA weights in fp32 (autocast_adapter_dtype=True)
NF4_BLOCK = 64              # bitsandbytes: one absmax constant per 64 weights
NESTED_BLOCK = 256          # double quant: one fp32 constant per 256 first-level constants
ADAM8_BLOCK = 256           # bitsandbytes 8-bit optimizers: blockwise absmax over 256 values
ADAM8_MIN_NUMEL = 4096      # bitsandbytes keeps 32-bit state for tensors smaller than this (min_8bit_size)


# ---------------------------------------------------------------------------------------------------------------
# Resident bytes: weights, adapters, gradients, optimizer state
# ---------------------------------------------------------------------------------------------------------------
def nf4_linear_bytes(numel: int, double_quant: bool = True) -> int:
    """Bytes bitsandbytes holds for one NF4 Linear weight of `numel` values (QLoRA, Dettmers et al. 2023).

    data: 4 bits a weight → numel/2 bytes. Quantisation constants, one per 64-weight block:
    - plain: an fp32 absmax per block (32 bits / 64 weights = 0.5 bit/param);
    - double quant: the absmaxes are themselves quantised to 8 bits, with one fp32 constant per 256 of them
      (8/64 + 32/(64·256) ≈ 0.127 bit/param), plus bitsandbytes' fixed overheads: a 256-entry fp32 code book
      (1 KiB) and an fp32 offset per weight.
    Always: the 16-entry fp32 NF4 code (64 B) per weight.
    """
    blocks = math.ceil(numel / NF4_BLOCK)
    data = math.ceil(numel / 2)
    nf4_code = 16 * 4
    if not double_quant:
        return data + blocks * 4 + nf4_code
    nested = math.ceil(blocks / NESTED_BLOCK)
    return data + blocks * 1 + nested * 4 + 256 * 4 + 4 + nf4_code


def lora_params_per_layer(shape: ModelShape, cfg: RunConfig) -> int:
    """LoRA adds A (r × d_in) and B (d_out × r) to each target: r·(d_in + d_out) parameters."""
    dims = shape.linear_dims()
    return sum(cfg.lora_r * (dims[t][0] + dims[t][1]) for t in cfg.lora_targets)


def trainable_params(shape: ModelShape, cfg: RunConfig) -> int:
    """Llama-3.2-1B, r=16 on q,k,v,o: 16 layers × 16·((2048+2048)+(2048+512)·2+(2048+2048)) = 3,407,872."""
    return lora_params_per_layer(shape, cfg) * shape.layers


def weight_bytes(shape: ModelShape, cfg: RunConfig, precision: str) -> dict[str, int]:
    """Frozen base weights. With nf4 every decoder Linear is 4-bit; bitsandbytes' load_in_4bit leaves the
    embeddings, lm_head, norms and biases in the compute dtype (c bytes each)."""
    c = DTYPE_BYTES[precision]
    dims = shape.linear_dims()
    per_layer_linear = {name: d_in * d_out for name, (d_in, d_out) in dims.items()}
    if cfg.quant == "nf4":
        quantized = shape.layers * sum(nf4_linear_bytes(n) for n in per_layer_linear.values())
    else:
        quantized = 0
    linear_16 = 0 if cfg.quant == "nf4" else shape.layers * sum(per_layer_linear.values()) * c
    embed = shape.vocab * shape.hidden * c                                  # (V, h)
    head = 0 if shape.tied else shape.vocab * shape.hidden * c             # tied head shares the embedding
    norms = (2 * shape.layers + 1) * shape.hidden * c                      # two RMSNorms a layer + the final one
    bias = shape.layers * (shape.heads + 2 * shape.kv_heads) * shape.hd * c if shape.qkv_bias else 0
    return {"quantized_weights": quantized, "unquantized_weights": linear_16 + embed + head + norms + bias}


def optimizer_bytes(shape: ModelShape, cfg: RunConfig) -> int:
    """State for the LoRA tensors.

    adamw (torch): two fp32 moments = 8 B/param, plus a 4-byte step counter per tensor.
    paged_adamw_8bit (bitsandbytes): two uint8 moments = 2 B/param plus an fp32 absmax per 256 values of each
    moment; tensors under 4096 values keep fp32 moments (8 B/param); two 256-entry fp32 quantile maps are shared.
    Paging moves these bytes to CPU RAM only under GPU memory pressure, so on a GPU they count as resident.
    """
    dims = shape.linear_dims()
    tensors = []                                                # numel of each LoRA tensor (A and B per target)
    for t in cfg.lora_targets:
        d_in, d_out = dims[t]
        tensors += [cfg.lora_r * d_in, cfg.lora_r * d_out]
    tensors = tensors * shape.layers
    if cfg.optim == "adamw":
        return sum(8 * n + 4 for n in tensors)
    total, any_8bit = 0, False
    for n in tensors:
        if n < ADAM8_MIN_NUMEL:
            total += 8 * n
        else:
            total += 2 * n + 2 * 4 * math.ceil(n / ADAM8_BLOCK)
            any_8bit = True
    return total + (2 * 256 * 4 if any_8bit else 0)


# ---------------------------------------------------------------------------------------------------------------
# Saved activations: what autograd keeps for backward in one micro-batch forward
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class ActivationBreakdown:
    norms: int = 0          # RMSNorm: fp32 copy of its input (T·h·4) + 1/rms (T·4)
    attention: int = 0      # SDPA: q, k, v, output (c) + logsumexp (fp32) [+ float mask b·s²·c]
    rope: int = 0           # cos and sin tables, shared by all layers (s·hd·c each)
    mlp: int = 0            # SwiGLU: gate, silu(gate), up (T·i·c each)
    lora: int = 0           # dropout masks, adapter inputs, autocast weight copies
    checkpoints: int = 0    # with checkpointing: one layer input per layer (T·h·c)
    final_norm: int = 0

    @property
    def total(self) -> int:
        return (self.norms + self.attention + self.rope + self.mlp + self.lora + self.checkpoints
                + self.final_norm)


def dropout_mask_bytes(device_type: str) -> int:
    """Bytes per element of the dropout mask autograd keeps: on a CPU, dropout multiplies by a float mask in the
    input's dtype (fp32: the adapters' dtype); CUDA's fused dropout kernel keeps a bool mask (1 byte)."""
    return 1 if device_type == "cuda" else 4


def _lora_saved(cfg: RunConfig, d_in: int, d_out: int, T: int, c: int, input_needs_grad: bool,
                shares_input: bool, mask_bytes: int = 4) -> int:
    """Bytes saved by one peft LoRA branch: lora_B(lora_A(dropout(x))) · scale, x cast to fp32 first.

    fp32 run (no autocast): dropout keeps a mask (T·d_in·mask_bytes, only if x needs a gradient) and lora_A keeps
    its input, the dropout output (T·d_in·4). Without dropout lora_A keeps x itself, which q, k, v (and gate, up)
    share: `shares_input` says another branch already counted it.
    16-bit run (autocast): the mask is as in fp32; lora_A keeps autocast's 16-bit copy of its input (T·d_in·c)
    and, when x needs a gradient, its 16-bit weight copy (r·d_in·c); lora_B keeps its weight copy (r·d_out·c).
    Both keep lora_B's input, the rank-r activation (T·r·c, or T·r·4 in fp32).
    """
    r = cfg.lora_r
    mask = T * d_in * mask_bytes if (cfg.lora_dropout > 0 and input_needs_grad) else 0
    if c == 4:
        a_input = T * d_in * 4 if (cfg.lora_dropout > 0 or not shares_input) else 0
        return mask + a_input + T * r * 4
    a_weight = r * d_in * c if input_needs_grad else 0
    return mask + T * d_in * c + a_weight + T * r * c + r * d_out * c


def saved_activations(shape: ModelShape, cfg: RunConfig, precision: str, padding_mask: bool = True,
                      device_type: str = "cpu") -> ActivationBreakdown:
    """Bytes autograd saves in one micro-batch forward (logits and loss buffers excluded: see `logits_saved`).

    Without checkpointing, per layer (when every tensor needs a gradient):
      2 RMSNorms            2·(T·h·4 + T·4)           fp32 upcast inside the norm, whatever c is
      attention (SDPA)      T·(heads·hd)·c · 2        q and the output
                          + T·(kv·hd)·c · 2           k, v (repeated to all heads when a padding mask is used,
                                                       because transformers then calls SDPA without enable_gqa)
                          + T·heads·4                 logsumexp
                          + b·s²·c                    the float padding mask, converted per layer
      MLP (SwiGLU)          3·T·i·c                   gate, silu(gate), up
      LoRA                  see `_lora_saved`
    The 4-bit base Linears save nothing: their weights are frozen, and bitsandbytes re-dequantises the weight in
    backward to get the input gradient. Layer 0 saves less: its input (the frozen embedding) needs no gradient,
    so its first norm and the dropout masks of the q, k, v adapters are not kept.
    Once per model: RoPE's cos and sin (s·hd·c each) and the final norm (T·h·4 + T·4).

    With checkpointing (transformers wraps every decoder layer, non-reentrant): each layer keeps only its input,
    T·h·c; the final norm stays. The rest is recomputed during backward (see `recompute_bytes`).

    `device_type` matters for one term, the dropout mask (`dropout_mask_bytes`). These terms were checked to the
    byte on a CPU; CUDA attention kernels may keep slightly different buffers (the GPU tests check within 10%).
    """
    c = DTYPE_BYTES[precision]
    b, s = cfg.micro_batch, cfg.seq_len
    T = b * s
    h, i, L, hd = shape.hidden, shape.intermediate, shape.layers, shape.hd
    dims = shape.linear_dims()
    targets = set(cfg.lora_targets)
    mb = dropout_mask_bytes(device_type)
    out = ActivationBreakdown(final_norm=T * h * 4 + T * 4)
    if cfg.gradient_checkpointing:
        out.checkpoints = L * T * h * c
        return out

    kv_saved = shape.heads if padding_mask else shape.kv_heads
    rope_needed = False
    for layer in range(L):
        x_grad = layer > 0                                   # does this layer's input need a gradient?
        if x_grad:
            out.norms += T * h * 4 + T * 4                   # input_layernorm
        qkv_grad = {p: x_grad or p in targets for p in ("q_proj", "k_proj", "v_proj")}
        attn_in_grad = any(qkv_grad.values())
        shared = False
        for p in ("q_proj", "k_proj", "v_proj"):
            if p in targets:
                out.lora += _lora_saved(cfg, *dims[p], T, c, x_grad, shares_input=shared, mask_bytes=mb)
                shared = True
        if attn_in_grad:
            rope_needed = rope_needed or qkv_grad["q_proj"] or qkv_grad["k_proj"]
            out.attention += 2 * T * shape.heads * hd * c + 2 * T * kv_saved * hd * c + T * shape.heads * 4
            if padding_mask:
                out.attention += b * s * s * c
        if "o_proj" in targets:                              # its input is a view of SDPA's output, which
            out.lora += _lora_saved(cfg, *dims["o_proj"], T, c, attn_in_grad,   # attention already keeps
                                    shares_input=attn_in_grad, mask_bytes=mb)
        h2_grad = x_grad or attn_in_grad or "o_proj" in targets
        if h2_grad:
            out.norms += T * h * 4 + T * 4                   # post_attention_layernorm
        gate_grad, up_grad = h2_grad or "gate_proj" in targets, h2_grad or "up_proj" in targets
        shared = False
        for p in ("gate_proj", "up_proj"):
            if p in targets:
                out.lora += _lora_saved(cfg, *dims[p], T, c, h2_grad, shares_input=shared, mask_bytes=mb)
                shared = True
        out.mlp += T * i * c * ((1 if gate_grad else 0)          # silu keeps its input (gate)
                                + (1 if up_grad else 0)          # the product keeps silu(gate) for d(up)
                                + (1 if gate_grad else 0))       # ... and up for d(gate)
        if "down_proj" in targets:
            out.lora += _lora_saved(cfg, *dims["down_proj"], T, c, gate_grad or up_grad, shares_input=False,
                                    mask_bytes=mb)
    if rope_needed:
        out.rope = 2 * s * hd * c
    return out


def logits_saved(shape: ModelShape, cfg: RunConfig) -> int:
    """The loss's saved buffers: transformers upcasts the logits to fp32 and cross-entropy keeps the
    log-softmax (T·V·4) plus the int64 targets (T·8) and a 4-byte total weight. For a 128k vocabulary this term
    alone can exceed all the layer activations of a checkpointed model."""
    T = cfg.micro_batch * cfg.seq_len
    return T * shape.vocab * 4 + T * 8 + 4


def logits_transient(shape: ModelShape, cfg: RunConfig, precision: str) -> int:
    """Logit-sized buffers alive in the loss backward besides the saved log-softmax (op by op, see `peak_phases`):
    the lm_head output in the compute dtype (T·V·c), which the runner's `out` holds until backward ends
    (`labkit.engine.runner.forward_backward` keeps `out` alive, so `out.logits` does), plus two fp32 gradients:
    nll_loss_backward's (T·V·4, `at::zeros_like` then a scatter) and log_softmax_backward's result (T·V·4), both
    alive while the latter is computed. In fp32 `logits.float()` returns the lm_head output itself, so nothing else
    is logit-sized; with c < 4 the fp32 upcast is freed after the forward (ToCopyBackward saves nothing)."""
    c = DTYPE_BYTES[precision]
    TV = cfg.micro_batch * cfg.seq_len * shape.vocab
    return TV * c + 2 * TV * 4


def _layer_saved(shape: ModelShape, cfg: RunConfig, precision: str, padding_mask: bool, device_type: str,
                 first: bool) -> int:
    """What one decoder layer saves without checkpointing: the first layer (its input needs no gradient) or any
    other one. Read off `saved_activations` of a 1- and a 2-layer model; the once-per-model terms (final norm, RoPE
    tables) taken out."""
    no_ckpt = cfg.replace(gradient_checkpointing=False)

    def per_layer(layers: int) -> int:
        acts = saved_activations(ModelShape(**{**shape.to_dict(), "layers": layers}), no_ckpt, precision,
                                 padding_mask, device_type)
        return acts.total - acts.final_norm - acts.rope
    return per_layer(1) if first else per_layer(2) - per_layer(1)


def recompute_bytes(shape: ModelShape, cfg: RunConfig, precision: str, padding_mask: bool = True,
                    device_type: str = "cpu") -> int:
    """With checkpointing, backward re-runs one layer at a time: its activations (a middle layer's, as without
    checkpointing) exist again while that layer's gradients are computed. In fp32 one of them is not new: the input
    norm saves its input upcast to fp32, and in fp32 `.to(torch.float32)` returns the layer input itself, which the
    checkpoint already holds (T·h·4 less)."""
    if not cfg.gradient_checkpointing:
        return 0
    T = cfg.micro_batch * cfg.seq_len
    shared_input = T * shape.hidden * 4 if DTYPE_BYTES[precision] == 4 else 0
    return _layer_saved(shape, cfg, precision, padding_mask, device_type, first=False) - shared_input


def simple_rule_activations(shape: ModelShape, cfg: RunConfig) -> int:
    """The seed's rule: b·s·h·L·2 bytes (7B, b=1, s=2048, h=4096, L=32 → 536,870,912 B ≈ 512 MiB)."""
    return cfg.micro_batch * cfg.seq_len * shape.hidden * shape.layers * 2


# ---------------------------------------------------------------------------------------------------------------
# CUDA facts: what the caching allocator counts besides tensors (unverified on a CPU: there is no allocator to read)
# ---------------------------------------------------------------------------------------------------------------
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


# ---------------------------------------------------------------------------------------------------------------
# The peak: the most bytes alive at one moment of a micro-batch
# ---------------------------------------------------------------------------------------------------------------
def batch_bytes(cfg: RunConfig) -> int:
    """The runner moves every micro-batch of a step to the device before the step starts: input_ids,
    attention_mask and labels, int64, (b, s) each (`labkit.engine.runner.measure_run`)."""
    return cfg.grad_accum * 3 * cfg.micro_batch * cfg.seq_len * 8


def checkpoint_shared_inputs(shape: ModelShape, cfg: RunConfig, precision: str, padding_mask: bool) -> int:
    """With (non-reentrant) checkpointing every layer call keeps its inputs for the recomputation, through backward:
    besides the hidden states (the `checkpoints` term) the RoPE cos and sin (s·hd·c each, one pair for all layers),
    the position ids (s·8) and, with padding, transformers' boolean 4-D mask (b·s², 1 byte each). Autograd's
    saved-tensor hooks never see these (they are closure inputs), so `saved_activations` leaves them out."""
    if not cfg.gradient_checkpointing:
        return 0
    b, s, c = cfg.micro_batch, cfg.seq_len, DTYPE_BYTES[precision]
    return 2 * s * shape.hd * c + s * 8 + (b * s * s if padding_mask else 0)


def dequantized_weight_bytes(shape: ModelShape, cfg: RunConfig, precision: str, recomputing: bool = False) -> int:
    """One MLP weight (h·i values) dequantised from 4 bits for a matmul, in the compute dtype (bitsandbytes 0.50,
    bitsandbytes/autograd/_functions.py). Backward: `MatMul4Bit.backward` → `F.dequantize_4bit(B, state)` (h·i·c;
    its fp32 absmax is freed before the matmul). CUDA forward (`recomputing`): the `gemm_4bit` op falls back to
    `_dequant_linear_fallback` (bitsandbytes/backends/cuda/ops.py) above 1,536 tokens, and below it wherever its
    per-GPU heuristic prefers dequantise + F.linear (fp32 always); during F.linear the fp32 absmax and absmax+offset
    (one value per 64 weights each) are alive too. Taken as that fallback: unverified without a GPU."""
    if cfg.quant != "nf4":
        return 0
    n = shape.hidden * shape.intermediate
    return n * DTYPE_BYTES[precision] + (2 * math.ceil(n / NF4_BLOCK) * 4 if recomputing else 0)


def _lora_fp32_input_copies(cfg: RunConfig, precision: str, device_type: str, d_in: int, T: int) -> tuple[int, int]:
    """(x cast to fp32, fp32 dropout output) that peft's LoRA Linear4bit.forward keeps alive besides what autograd
    saves (peft/tuners/lora/bnb.py): it casts x to the adapters' fp32 only when `torch.is_autocast_enabled()` — CUDA's
    flag — is False, i.e. on a CPU under autocast (16-bit). The cast input lives to the end of the forward; the
    dropout output until lora_A has taken its 16-bit autocast copy. On CUDA, or in fp32, neither exists: x stays
    16-bit and the dropout output is lora_A's saved input."""
    if device_type == "cuda" or DTYPE_BYTES[precision] == 4:
        return 0, 0
    return T * d_in * 4, (T * d_in * 4 if cfg.lora_dropout > 0 else 0)


def mlp_lora_forward_bytes(shape: ModelShape, cfg: RunConfig, precision: str, device_type: str,
                           recomputing: bool = False) -> int:
    """Bytes a decoder layer's forward holds beyond what autograd saves while an MLP adapter runs (0 without LoRA
    on up_proj or down_proj), read off peft's Linear4bit.forward (peft/tuners/lora/bnb.py) and the layer's locals:

      the MLP input x (T·h·c) and, in 16-bit, the residual (T·h·c; in fp32 the norm's saved input is the residual
      itself); on a CPU in 16-bit peft's fp32 copies (`_lora_fp32_input_copies`);
      down_proj adapter (the last op of the layer): its input silu(gate)·up (T·i·c), the clone of the base output
      (T·h·c), then lora_B's output and its scaled copy (2·T·h·c) — or, at lora_A, the fp32 dropout output. A
      recomputation (`recomputing`) never reaches lora_B's matmul: checkpoint stops once the last saved tensor
      (lora_B's weight copy) exists (torch/utils/checkpoint.py, _StopRecomputationError);
      up_proj adapter (if down_proj has none): lora_B's output and its scaled copy (2·T·i·c) next to the clone of
      the base output, which becomes `up` (saved).
    """
    targets = set(cfg.lora_targets)
    if not targets & {"up_proj", "down_proj"}:
        return 0
    c = DTYPE_BYTES[precision]
    T, h, i = cfg.micro_batch * cfg.seq_len, shape.hidden, shape.intermediate
    locals_ = T * h * c + (T * h * c if c < 4 else 0)                     # MLP input, residual
    if "down_proj" in targets:
        cast, dropped = _lora_fp32_input_copies(cfg, precision, device_type, i, T)
        return locals_ + T * i * c + T * h * c + cast + max(dropped, 0 if recomputing else 2 * T * h * c)
    cast, _ = _lora_fp32_input_copies(cfg, precision, device_type, h, T)
    return locals_ + 2 * T * i * c + cast


def _layer_backward(shape, cfg, precision, padding_mask, device_type, layer: int) -> dict[str, int]:
    """Bytes alive (besides resident state and the held logits) at the busiest moment of layer `layer`'s backward,
    which is around its MLP (i > h in every Llama-family model, so the MLP's T·i tensors dominate).

    Read op by op (verified with `labkit.engine.measure.LiveTensorMeter` on a CPU):
      stored      what is still kept for the layers below: without checkpointing their saved activations
                  (+ RoPE tables); with it their inputs (layer+1)·T·h·c + the shared checkpoint inputs;
      recompute   with checkpointing, this layer's activations recomputed (`recompute_bytes`), layer 0's as
                  much as any other: with checkpointing transformers calls `enable_input_require_grads`
                  (modeling_utils.py `_activation_checkpointing_enable`), so the embedding output needs a gradient;
      grad_flow   the gradient of the residual stream arriving at the layer (T·h·c);
      gradients   LoRA gradients of the layers above (all of them from the 2nd micro-batch of an accumulation on),
                  and this layer's down_proj adapter gradients, made before the rest of its MLP backward;
      grad_mlp    the largest of these moments' own tensors:
        mlp_backward  down_proj's input gradient (T·i·c), then MulBackward0 of silu(gate)·up makes two more T·i·c
                      (for gate and for up) while it is alive — or, where larger, a dequantised 4-bit weight is
                      alive with it: down_proj's backward (without checkpointing) or, on CUDA, up_proj's
                      recomputation (bitsandbytes' gemm_4bit falls back to dequantise + F.linear);
        recompute     (checkpointing, LoRA on the MLP) the recomputation reaching the MLP adapter
                      (`mlp_lora_forward_bytes`), after down_proj's input gradient T·i·c exists — or, with LoRA on
                      down_proj, whose adapter's backward triggers the recomputation, next to its scaled output
                      gradient T·h·c instead.
    """
    b, s, c = cfg.micro_batch, cfg.seq_len, DTYPE_BYTES[precision]
    T, h, i = b * s, shape.hidden, shape.intermediate
    first = _layer_saved(shape, cfg, precision, padding_mask, device_type, first=True)
    other = _layer_saved(shape, cfg, precision, padding_mask, device_type, first=False)
    if cfg.gradient_checkpointing:
        stored = (layer + 1) * T * h * c + checkpoint_shared_inputs(shape, cfg, precision, padding_mask)
        recompute = recompute_bytes(shape, cfg, precision, padding_mask, device_type)   # layer 0's too (above)
        dequant = dequantized_weight_bytes(shape, cfg, precision, recomputing=True) if device_type == "cuda" else 0
    else:
        stored = first + layer * other + saved_activations(shape, cfg, precision, padding_mask, device_type).rope
        recompute = 0
        dequant = dequantized_weight_bytes(shape, cfg, precision)
    lora_down = "down_proj" in cfg.lora_targets
    own_down = cfg.lora_r * (i + h) * ADAPTER_BYTES if lora_down else 0
    grads = lora_params_per_layer(shape, cfg) * ADAPTER_BYTES * (
        shape.layers if cfg.grad_accum > 1 else shape.layers - 1 - layer)
    moments = [T * i * c + max(2 * T * i * c, dequant) + own_down]
    if cfg.gradient_checkpointing and mlp_lora_forward_bytes(shape, cfg, precision, device_type):
        moments.append((T * h * c if lora_down else T * i * c)
                       + mlp_lora_forward_bytes(shape, cfg, precision, device_type, recomputing=True))
    return {"gradients": grads, "stored": stored, "recompute": recompute, "grad_flow": T * h * c,
            "grad_mlp": max(moments)}


def peak_phases(shape: ModelShape, cfg: RunConfig, precision: str, padding_mask: bool = True,
                device_type: str = "cpu") -> dict[str, dict[str, int]]:
    """The candidate moments for the peak of one micro-batch, each with what is alive then (bytes above the
    resident weights, adapters, optimizer state and batch). Backward finishes the loss and the head before it
    reaches (and, with checkpointing, recomputes) any decoder layer, so logit-sized buffers and a recomputed layer
    never coexist: the peak is the largest of these, not their sum.

    Always alive: the runner's `out` holds `out.logits` (T·V·c) until backward ends. Gradients: from the 2nd
    micro-batch of an accumulation cycle all LoRA gradients exist; with grad_accum = 1 they appear layer by layer.

      forward_end          at log_softmax: saved activations, logits T·V·c, their fp32 upcast (c < 4), the
                           log-softmax output T·V·4, the last hidden state T·h·c (transformers' output holds it)
      loss_backward        at log_softmax_backward: saved activations, the saved loss buffers (`logits_saved`),
                           logits + two fp32 gradients (`logits_transient`)
      layer_forward        (no checkpointing, LoRA on the MLP) the last layer's MLP adapter in the forward:
                           saved activations so far + `mlp_lora_forward_bytes` + the model's forward locals: the
                           embedding output T·h·c, in 16-bit the last layer's input T·h·c (in fp32 its input norm
                           saves that very tensor) and the position ids s·8
      final_norm_backward  at the final RMSNorm's PowBackward0: saved activations + 5·T·h·4: the gradient of
                           x·rstd for x, the mean's expanded gradient, and pow_backward's x^1, 2·x^1 and product
                           (torch/csrc/autograd/FunctionsManual.cpp `pow_backward`)
      layer_backward       the busiest layer (see `_layer_backward`), over every layer
    """
    b, s, c = cfg.micro_batch, cfg.seq_len, DTYPE_BYTES[precision]
    T, V, h = b * s, shape.vocab, shape.hidden
    acts = saved_activations(shape, cfg, precision, padding_mask, device_type).total \
        + checkpoint_shared_inputs(shape, cfg, precision, padding_mask)
    grads_all = trainable_params(shape, cfg) * ADAPTER_BYTES if cfg.grad_accum > 1 else 0
    held = {"logits": T * V * c, "loss": 2 * 4}          # out.logits; out.loss and backward's seed gradient
    phases = {
        "forward_end": {"gradients": grads_all, "activations": acts, **held, "logits_fp32": T * V * 4 if c < 4 else 0,
                        "log_softmax": T * V * 4, "last_hidden": T * h * c},
        "loss_backward": {"gradients": grads_all, "activations": acts, **held,
                          "loss_saved": logits_saved(shape, cfg), "logit_grads": 2 * T * V * 4},
        "final_norm_backward": {"gradients": grads_all, "activations": acts, **held, "norm_grads": 5 * T * h * 4},
    }
    if not cfg.gradient_checkpointing and mlp_lora_forward_bytes(shape, cfg, precision, device_type):
        top = saved_activations(shape, cfg, precision, padding_mask, device_type)
        phases["layer_forward"] = {"gradients": grads_all, "activations": top.total - top.final_norm,
                                   "forward_locals": T * h * c + (T * h * c if c < 4 else 0) + s * 8,
                                   "mlp_lora": mlp_lora_forward_bytes(shape, cfg, precision, device_type)}
    layers = [{**held, **_layer_backward(shape, cfg, precision, padding_mask, device_type, layer)}
              for layer in range(shape.layers)]
    phases["layer_backward"] = max(layers, key=lambda d: sum(d.values()))
    return phases


# ---------------------------------------------------------------------------------------------------------------
# The whole budget
# ---------------------------------------------------------------------------------------------------------------
def predict_memory(shape: ModelShape, cfg: RunConfig, precision: str, padding_mask: bool = True,
                   device_type: str = "cpu", capability=None, blas_env: dict | None = None) -> dict:
    """Every component in bytes, and the peak.

    `activations + logits` predicts `measured.saved_activation_bytes`. The peak predicts the most bytes alive
    at one moment of a step (`torch.cuda.max_memory_allocated` on CUDA): resident state (weights, adapters,
    optimizer; rounded as the CUDA allocator counts them) + the step's batch + the cuBLAS workspaces (CUDA) + the
    largest of the phases in `peak_phases`. The CUDA context and the allocator's reserved-but-free memory are not
    in it. `capability` and `blas_env` (the values of `BLAS_ENV_VARS` that are set, e.g.
    {"CUBLAS_WORKSPACE_CONFIG": ":4096:8"}) are facts about the device, used on CUDA only.
    """
    if precision not in DTYPE_BYTES:
        raise ValueError(f"precision must be resolved to fp32/fp16/bf16 first, got {precision!r}")
    w = weight_bytes(shape, cfg, precision)
    lora = trainable_params(shape, cfg) * ADAPTER_BYTES
    acts = saved_activations(shape, cfg, precision, padding_mask, device_type)
    optimizer = optimizer_bytes(shape, cfg)
    weights = w["quantized_weights"] + w["unquantized_weights"]

    resident, rounding = resident_at_peak(shape, cfg, precision, device_type)
    batch = batch_bytes(cfg)
    workspace = cuda_workspace_bytes(device_type, capability, blas_env)
    phases = peak_phases(shape, cfg, precision, padding_mask, device_type)
    totals = {name: sum(parts.values()) for name, parts in phases.items()}
    peak_phase = max(totals, key=totals.get)
    peak = resident + batch + workspace + rounding + totals[peak_phase]
    return {
        "weights": weights, **w,
        "lora": lora, "trainable_params": trainable_params(shape, cfg),
        "gradients": lora,                                      # one fp32 gradient per adapter weight
        "optimizer": optimizer,
        "activations": acts.total,
        "activations_breakdown": vars(acts).copy(),
        "logits": logits_saved(shape, cfg),
        "logits_transient": logits_transient(shape, cfg, precision),
        "recompute": recompute_bytes(shape, cfg, precision, padding_mask, device_type),
        "peak": peak,
        "peak_phase": peak_phase,
        "peak_breakdown": {"resident": resident, "batch": batch, "cuda_workspace": workspace,
                           "allocator_rounding": rounding, **phases[peak_phase]},
        "peak_phases": totals,
        "cuda_workspace": workspace,
        "simple_rule_activations": simple_rule_activations(shape, cfg),
        "padding_mask": padding_mask,
    }


# ---------------------------------------------------------------------------------------------------------------
# Compute and time
# ---------------------------------------------------------------------------------------------------------------
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


def predict(shape: ModelShape, cfg: RunConfig, precision: str, padding_mask: bool = True,
            gpu_name: str | None = None, device_type: str | None = None, capability=None,
            blas_env: dict | None = None) -> dict:
    """Memory and compute in one dict: what `experiment` puts under record["theory"]. device_type defaults to
    "cuda" when a GPU name is given, else "cpu"."""
    device_type = device_type or ("cuda" if gpu_name else "cpu")
    out = predict_memory(shape, cfg, precision, padding_mask, device_type, capability, blas_env)
    flops = predict_step_flops(shape, cfg)
    out["step_flops"] = flops["step"]
    out["step_flops_breakdown"] = flops
    out["step_time_at_peak_s"] = step_time_at_peak(flops["step"], gpu_name, precision)
    return out
