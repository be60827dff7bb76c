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
    """Logit-sized buffers alive around the loss but not saved: the lm_head output in the compute dtype
    (T·V·c), its fp32 upcast when c < 4 (T·V·4), and the gradient of the log-softmax in backward (T·V·4)."""
    c = DTYPE_BYTES[precision]
    TV = cfg.micro_batch * cfg.seq_len * shape.vocab
    return TV * c + (TV * 4 if c < 4 else 0) + TV * 4


def recompute_bytes(shape: ModelShape, cfg: RunConfig, precision: str, padding_mask: bool = True,
                    device_type: str = "cpu") -> int:
    """With checkpointing, backward re-runs one layer at a time: its full activations (a middle layer's, as
    without checkpointing) exist again while that layer's gradients are computed."""
    if not cfg.gradient_checkpointing:
        return 0
    no_ckpt = cfg.replace(gradient_checkpointing=False)
    two = saved_activations(ModelShape(**{**shape.to_dict(), "layers": 2}), no_ckpt, precision, padding_mask,
                            device_type)
    one = saved_activations(ModelShape(**{**shape.to_dict(), "layers": 1}), no_ckpt, precision, padding_mask,
                            device_type)
    return two.total - one.total                          # = what layer 1 (any layer but the first) saves


def simple_rule_activations(shape: ModelShape, cfg: RunConfig) -> int:
    """The seed's rule: b·s·h·L·2 bytes (7B, b=1, s=2048, h=4096, L=32 → 536,870,912 B ≈ 512 MiB)."""
    return cfg.micro_batch * cfg.seq_len * shape.hidden * shape.layers * 2


# ---------------------------------------------------------------------------------------------------------------
# The whole budget
# ---------------------------------------------------------------------------------------------------------------
def predict_memory(shape: ModelShape, cfg: RunConfig, precision: str, padding_mask: bool = True,
                   device_type: str = "cpu") -> dict:
    """Every component in bytes, and the peak.

    `activations + logits` predicts `measured.saved_activation_bytes`. The peak is resident state + saved
    activations + the logit buffers around the loss + (with checkpointing) one layer's recomputed activations;
    the allocator's own overhead and the CUDA context are not in it.
    """
    if precision not in DTYPE_BYTES:
        raise ValueError(f"precision must be resolved to fp32/fp16/bf16 first, got {precision!r}")
    w = weight_bytes(shape, cfg, precision)
    lora = trainable_params(shape, cfg) * ADAPTER_BYTES
    acts = saved_activations(shape, cfg, precision, padding_mask, device_type)
    logits = logits_saved(shape, cfg)
    transient = logits_transient(shape, cfg, precision)
    recompute = recompute_bytes(shape, cfg, precision, padding_mask, device_type)
    optimizer = optimizer_bytes(shape, cfg)
    weights = w["quantized_weights"] + w["unquantized_weights"]
    peak = weights + lora + lora + optimizer + acts.total + logits + transient + recompute
    return {
        "weights": weights, **w,
        "lora": lora, "trainable_params": trainable_params(shape, cfg),
        "gradients": lora,                                      # one fp32 gradient per adapter weight
        "optimizer": optimizer,
        "activations": acts.total,
        "activations_breakdown": vars(acts).copy(),
        "logits": logits,
        "logits_transient": transient,
        "recompute": recompute,
        "peak": peak,
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
            gpu_name: str | None = None, device_type: str | None = None) -> dict:
    """Memory and compute in one dict: what `experiment` puts under record["theory"]. device_type defaults to
    "cuda" when a GPU name is given, else "cpu"."""
    device_type = device_type or ("cuda" if gpu_name else "cpu")
    out = predict_memory(shape, cfg, precision, padding_mask, device_type)
    flops = predict_step_flops(shape, cfg)
    out["step_flops"] = flops["step"]
    out["step_flops_breakdown"] = flops
    out["step_time_at_peak_s"] = step_time_at_peak(flops["step"], gpu_name, precision)
    return out
