"""Checkers of exercises 01 (where training memory goes): LoRA parameters, the adapters' state, the logits."""
from __future__ import annotations

import random

from labkit import theory
from labkit.checkers._engine import CheckResult, bytes_text, dict_case, matching_hint, number_case, run_cases
from labkit.checkers._fixtures import random_shape, shape_text
from labkit.config import RunConfig
from labkit.shapes import PRESETS

ALL_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
ADAPTER_KEYS = ("weights", "gradients", "optimizer")         # the keys of adapter_state's answer


def check_lora_params(lora_params) -> CheckResult:
    """`lora_params(shape, r, targets) -> int`: trainable LoRA parameters, compared with labkit.theory."""
    rng = random.Random(1)
    specs = [(PRESETS["llama-3.2-1b"].shape, 16, ("q_proj", "k_proj", "v_proj", "o_proj")),
             (PRESETS["llama-3.1-8b"].shape, 16, ("q_proj", "k_proj", "v_proj", "o_proj")),
             (PRESETS["qwen2.5-0.5b"].shape, 8, ALL_TARGETS),
             (PRESETS["smollm2-360m"].shape, 32, ("q_proj", "v_proj")),
             (PRESETS["tiny"].shape, 4, ALL_TARGETS)]
    for _ in range(3):
        specs.append((random_shape(rng), rng.choice([4, 8, 16, 64]),
                      tuple(sorted(rng.sample(ALL_TARGETS, rng.randint(1, 7))))))
    cases = []
    for shape, r, targets in specs:
        cfg = RunConfig(lora_r=r, lora_targets=targets)
        exp = theory.trainable_params(shape, cfg)
        dims = shape.linear_dims()
        square_kv = {t: ((shape.hidden, shape.hidden) if t in ("k_proj", "v_proj") else dims[t]) for t in targets}
        wrong = {
            "k_proj and v_proj are narrower than q_proj: they output kv_heads × head_dim (GQA)": (
                shape.layers * sum(r * (a + b) for a, b in square_kv.values()) if shape.kv_heads != shape.heads
                else None),
            "LoRA adds two matrices per target, A (r × d_in) and B (d_out × r): count both": (
                shape.layers * sum(r * dims[t][0] for t in targets)),
            "that is one layer's adapters: multiply by the number of layers": exp // shape.layers,
            "a LoRA pair is r·(d_in + d_out) parameters, not d_in·d_out": (
                shape.layers * sum(dims[t][0] * dims[t][1] for t in targets)),
        }
        cases.append(number_case(f"lora_params({shape_text(shape)}, r={r}, targets={list(targets)})",
                                 lora_params, (shape, r, targets), exp, 0.0, wrong, fmt=lambda v: f"{v:,}"))
    return run_cases("check_lora_params", cases)


def check_adapter_state(adapter_state) -> CheckResult:
    """`adapter_state(n_trainable, optim) -> {"weights", "gradients", "optimizer"}` in bytes, by the simple rule,
    compared with labkit.theory's tensor-by-tensor count (within 3%)."""
    specs = [("llama-3.2-1b", 16), ("llama-3.1-8b", 16), ("llama-3.1-8b", 64), ("smollm2-360m", 32)]
    cases = []
    for model, r in specs:
        for optim in ("adamw", "paged_adamw_8bit"):
            shape = PRESETS[model].shape
            cfg = RunConfig(lora_r=r, optim=optim)
            n = theory.trainable_params(shape, cfg)
            lora = n * theory.ADAPTER_BYTES
            exp = {"weights": lora, "gradients": lora, "optimizer": theory.optimizer_bytes(shape, cfg)}
            cases.append(dict_case(f"adapter_state({n:,}, {optim!r})  # {model}, r={r}", adapter_state,
                                   (n, optim), exp, {"weights": 0.03, "gradients": 0.03, "optimizer": 0.03},
                                   _adapter_hint(n, optim)))
    return run_cases("check_adapter_state", cases)


def _adapter_hint(n, optim):
    """hint(key, got): what a wrong byte count for n trainable parameters most likely means (matched within 3%)."""
    wrong = {
        "weights": {
            "peft keeps LoRA adapters in fp32 (4 bytes), even when the base computes in 16-bit": 2 * n},
        "gradients": {
            "a gradient has the dtype of its parameter: fp32 adapters get fp32 gradients": 2 * n,
            "the adapters are trained, so each has a gradient as large as itself": 0},
        "optimizer": {
            "Adam keeps two moments per parameter (m and v), not one": 4 * n,
            "Adam's two fp32 moments are 8 bytes per parameter; weights and gradients are their own lines": 16 * n,
            "8-bit Adam keeps two moments, one byte each: ≈ 2 bytes per parameter": 1 * n,
            "8-bit Adam stores each moment in one byte: ≈ 2 bytes per parameter": (
                8 * n if optim == "paged_adamw_8bit" else None),
            "torch AdamW keeps both moments in fp32: 8 bytes per parameter": 2 * n if optim == "adamw" else None,
        },
    }

    def hint(key, got):
        return matching_hint(got, wrong.get(key, {}), rel=0.03) or (
            "bytes = parameters × bytes per parameter: 4 for fp32 weights and gradients, 8 for AdamW's two fp32 "
            "moments, ≈ 2 for 8-bit Adam")
    return hint


def check_logits_bytes(logits_bytes) -> CheckResult:
    """`logits_bytes(micro_batch, seq_len, vocab) -> int`: bytes the loss keeps for backward (the fp32 log-softmax
    of every position), compared with labkit.theory.logits_saved (within 1%)."""
    rng = random.Random(2)
    specs = [("llama-3.2-1b", 2, 512), ("llama-3.1-8b", 4, 2048), ("qwen2.5-0.5b", 8, 1024), ("smollm2-360m", 1, 4096),
             ("tiny", 2, 128)]
    specs += [(rng.choice(list(PRESETS)), rng.randint(1, 16), rng.choice([256, 1000, 2048, 8192])) for _ in range(3)]
    cases = []
    for model, b, s in specs:
        shape = PRESETS[model].shape
        exp = theory.logits_saved(shape, RunConfig(model=model, micro_batch=b, seq_len=s))
        V, h = shape.vocab, shape.hidden
        wrong = {   # exp = b × s × V × 4 (fp32)
            "transformers upcasts the logits to fp32 before the loss: 4 bytes each": b * s * V * 2,
            "one logit per vocabulary entry, at every position: b × s × vocab": b * s * h * 4,
            "the logits exist for every sequence of the micro-batch: multiply by micro_batch": s * V * 4,
        }
        cases.append(number_case(f"logits_bytes({b}, {s}, {V:,})  # {model}", logits_bytes, (b, s, V), exp, 0.01,
                                 wrong, fmt=bytes_text))
    return run_cases("check_logits_bytes", cases)
