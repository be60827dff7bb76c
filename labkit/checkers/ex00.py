"""Checkers of exercises 00 (warm-up): counting a model's parameters, and the GiB its weights take."""
from __future__ import annotations

import random

from labkit.checkers._engine import CheckResult, is_number, number_case, run_cases
from labkit.checkers._references import BYTES_PER_PARAM, reference_param_count, reference_weights_gib
from labkit.shapes import PRESETS
from labkit.units import GiB


def check_param_count(count_params) -> CheckResult:
    """`count_params(shape) -> int`, checked on every preset against the published totals
    (Llama-3.2-1B 1,235,814,400; Llama-3.1-8B 8,030,261,248; Qwen2.5-0.5B 494,032,768; SmolLM2-360M 361,821,120)."""
    cases = []
    for name, preset in PRESETS.items():
        s = preset.shape
        exp = reference_param_count(s)
        linear = sum(a * b for a, b in s.linear_dims().values())
        mha = dict(s.linear_dims(), k_proj=(s.hidden, s.hidden), v_proj=(s.hidden, s.hidden))
        bias = (s.heads + 2 * s.kv_heads) * s.hd if s.qkv_bias else 0
        wrong = {
            "a tied model shares one matrix between the embeddings and lm_head: count it once": (
                exp + s.vocab * s.hidden if s.tied else None),
            "an untied model has its own lm_head (vocab × hidden) besides the embeddings": (
                exp - s.vocab * s.hidden if not s.tied else None),
            "k_proj and v_proj output kv_heads × head_dim values (grouped-query attention), not hidden": (
                exp + s.layers * (sum(a * b for a, b in mha.values()) - linear) if s.kv_heads != s.heads else None),
            "each layer has two RMSNorm weight vectors (hidden values each), plus one final norm": (
                exp - s.layers * 2 * s.hidden - s.hidden),
            "Qwen2 has biases on q_proj, k_proj and v_proj (their output sizes, per layer)": (
                exp - s.layers * bias if bias else None),
        }
        cases.append(number_case(f"count_params(PRESETS[{name!r}].shape)", count_params, (s,), exp, 0.0, wrong,
                                 fmt=lambda v: f"{v:,}", default_hint="walk the layer: embeddings, q/k/v/o, "
                                 "gate/up/down, two norms; then the final norm and lm_head"))
    return run_cases("check_param_count", cases)


def check_weights_gib(weights_gib) -> CheckResult:
    """`weights_gib(n_params, dtype) -> float`: GiB (2**30 bytes) to hold n_params in fp32/fp16/bf16/int8/nf4
    (nf4 = 4 bits, its quantisation constants left out)."""
    rng = random.Random(0)
    pairs = [(8_030_261_248, "fp16"), (8_030_261_248, "nf4"), (1_235_814_400, "fp32"), (494_032_768, "bf16"),
             (361_821_120, "int8")]
    pairs += [(rng.randint(10 ** 6, 10 ** 11), dt) for dt in ("fp32", "bf16", "nf4")]
    cases = []
    for n, dt in pairs:
        exp = reference_weights_gib(n, dt)
        wrong = {
            "nf4 stores 4 bits = half a byte per weight": (n * 4 / GiB if dt == "nf4" else None),
            "nf4 is 4 bits: half a byte per weight, not a whole one": (n / GiB if dt == "nf4" else None),
            "bf16 and fp16 take 2 bytes a value; fp32 takes 4": (n * 4 / GiB if dt in ("fp16", "bf16") else None),
            "fp32 takes 4 bytes a value": (n * 2 / GiB if dt == "fp32" else None),
            "GiB = 1024³ bytes (what torch and Colab report), not 10⁹": n * BYTES_PER_PARAM[dt] / 1e9,
            "that is the number of bits: divide by 8 for bytes": n * BYTES_PER_PARAM[dt] * 8 / GiB,
        }
        cases.append(number_case(f"weights_gib({n:,}, {dt!r})", weights_gib, (n, dt), exp, 1e-9, wrong,
                                 fmt=lambda v: f"{v:.4f} GiB" if is_number(v) else repr(v)))
    return run_cases("check_weights_gib", cases)
