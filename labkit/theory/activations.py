"""Saved activations: what autograd keeps for backward in one micro-batch forward, and the logits."""
from __future__ import annotations

from dataclasses import dataclass

from labkit.config import DTYPE_BYTES, RunConfig
from labkit.shapes import ModelShape


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


def layer_saved(shape: ModelShape, cfg: RunConfig, precision: str, padding_mask: bool, device_type: str,
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
    return layer_saved(shape, cfg, precision, padding_mask, device_type, first=False) - shared_input


def simple_rule_activations(shape: ModelShape, cfg: RunConfig) -> int:
    """The source lesson's rule: b·s·h·L·2 bytes (7B, b=1, s=2048, h=4096, L=32 → 536,870,912 B ≈ 512 MiB)."""
    return cfg.micro_batch * cfg.seq_len * shape.hidden * shape.layers * 2
