"""The peak: the most bytes alive at one moment of a micro-batch (`peak_phases`), and the whole budget
(`predict_memory`)."""
from __future__ import annotations

import math

from labkit.config import DTYPE_BYTES, RunConfig
from labkit.shapes import ModelShape
from labkit.theory.activations import (layer_saved, logits_saved, logits_transient, recompute_bytes,
                                       saved_activations, simple_rule_activations)
from labkit.theory.cuda import cuda_workspace_bytes, resident_at_peak
from labkit.theory.resident import (ADAPTER_BYTES, NF4_BLOCK, lora_params_per_layer, optimizer_bytes,
                                    trainable_params, weight_bytes)


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
    first = layer_saved(shape, cfg, precision, padding_mask, device_type, first=True)
    other = layer_saved(shape, cfg, precision, padding_mask, device_type, first=False)
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
