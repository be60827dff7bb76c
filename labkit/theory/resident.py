"""Resident bytes: 4-bit and 16-bit weights, LoRA adapters, their gradients and optimizer state."""
from __future__ import annotations

import math

from labkit.config import DTYPE_BYTES, RunConfig
from labkit.shapes import ModelShape


ADAPTER_BYTES = 4           # peft keeps LoRA weights in fp32 (autocast_adapter_dtype=True)
NF4_BLOCK = 64              # bitsandbytes: one absmax constant per 64 weights
NESTED_BLOCK = 256          # double quant: one fp32 constant per 256 first-level constants
ADAM8_BLOCK = 256           # bitsandbytes 8-bit optimizers: blockwise absmax over 256 values
ADAM8_MIN_NUMEL = 4096      # bitsandbytes keeps 32-bit state for tensors smaller than this (min_8bit_size)


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
