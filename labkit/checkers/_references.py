"""Reference answers: what the checkers compare the learner's answers with.

Only the checkers import this module; `labkit.checkers` does not re-export it, so the answers are not in a
learner's `ex.` namespace (and tests/test_boundaries.py checks that no learner notebook names it). Where labkit
already computes an answer (labkit.theory, labkit.config) the reference is a thin reading of it.
"""
from __future__ import annotations

import copy

import torch

from labkit import theory
from labkit.checkers._fixtures import grads_of, theory_peak
from labkit.config import RunConfig
from labkit.shapes import ModelShape
from labkit.units import GiB

BYTES_PER_PARAM = {"fp32": 4, "fp16": 2, "bf16": 2, "int8": 1, "nf4": 0.5}
MIN_SEQ_LEN = 256                         # reference_fit halves the sequence length no further than this


# ---------------------------------------------------------------------------------------------------------------
# 00 — warm-up
# ---------------------------------------------------------------------------------------------------------------
def reference_param_count(shape: ModelShape) -> int:
    """Every parameter of a Llama-family decoder: embeddings, head (unless tied), per layer the seven Linears,
    two RMSNorm weights and (Qwen2) the q/k/v biases, and the final norm."""
    linear = sum(d_in * d_out for d_in, d_out in shape.linear_dims().values())
    bias = (shape.heads + 2 * shape.kv_heads) * shape.hd if shape.qkv_bias else 0
    head = 0 if shape.tied else shape.vocab * shape.hidden
    return shape.vocab * shape.hidden + head + shape.layers * (linear + 2 * shape.hidden + bias) + shape.hidden


def reference_weights_gib(n_params: int, dtype: str) -> float:
    """GiB to hold n_params in `dtype`: 8,030,261,248 × 2 B / 1024³ = 14.96 GiB in fp16."""
    return n_params * BYTES_PER_PARAM[dtype] / GiB


# ---------------------------------------------------------------------------------------------------------------
# 03 — gradient accumulation
# ---------------------------------------------------------------------------------------------------------------
def reference_grads(model, micro_batches, mode: str = "big") -> list:
    """Gradients of `model` (a copy is used) for the cycle. The answer, "big": one big batch, the loss averaged
    over every label token. The usual mistakes, to name them in a hint: "mean_per_micro" = each micro-batch's
    mean loss / number of micro-batches; "sum_of_means" = the per-micro means summed; "per_sequence" = summed
    token losses / number of sequences."""
    m = copy.deepcopy(model)
    m.zero_grad(set_to_none=True)
    ce = torch.nn.functional.cross_entropy
    if mode == "big":
        ids = torch.cat([i for i, _ in micro_batches])
        labels = torch.cat([lab for _, lab in micro_batches])
        ce(m(ids).flatten(0, 1), labels.flatten(), ignore_index=-100).backward()
    else:
        n_seq = sum(i.shape[0] for i, _ in micro_batches)
        for ids, labels in micro_batches:
            logits = m(ids).flatten(0, 1)
            if mode == "per_sequence":
                loss = ce(logits, labels.flatten(), ignore_index=-100, reduction="sum") / n_seq
            else:
                loss = ce(logits, labels.flatten(), ignore_index=-100)
                if mode == "mean_per_micro":
                    loss = loss / len(micro_batches)
            loss.backward()
    return grads_of(m)


# ---------------------------------------------------------------------------------------------------------------
# 05 — QLoRA all together
# ---------------------------------------------------------------------------------------------------------------
def reference_budget(shape: ModelShape, cfg: RunConfig, precision: str = "fp16") -> dict:
    """The exercise's components, taken from labkit.theory.predict_memory."""
    p = theory.predict_memory(shape, cfg, precision)
    return {"weights_4bit": p["quantized_weights"], "weights_16bit": p["unquantized_weights"], "adapters": p["lora"],
            "gradients": p["gradients"], "optimizer": p["optimizer"],
            "activations": p["activations_breakdown"]["checkpoints"], "logits": p["logits"]}


# ---------------------------------------------------------------------------------------------------------------
# 06 — debugging OOM
# ---------------------------------------------------------------------------------------------------------------
def reference_axolotl_problems(cfg: dict, capability) -> set[int]:
    """The numbers of the Axolotl rules (labkit.checkers.AXOLOTL_RULES) that `cfg` breaks on that GPU."""
    out = set()
    if cfg.get("batch_size") is not None or cfg.get("micro_batch_size") is None \
            or cfg.get("gradient_accumulation_steps") is None:
        out.add(1)
    if cfg.get("eval_batch_size") is not None and cfg.get("eval_batch_size") != cfg.get("micro_batch_size"):
        out.add(2)
    if cfg.get("pad_to_sequence_len") is not True:
        out.add(3)
    if not cfg.get("adapter") and cfg.get("fp16") is True and cfg.get("sample_packing") is True \
            and not cfg.get("flash_attention"):
        out.add(4)
    if cfg.get("bf16") is True and capability is not None and tuple(capability) < (8, 0):
        out.add(5)
    if cfg.get("fp8") is True and not cfg.get("torch_compile"):
        out.add(6)
    return out


# ---------------------------------------------------------------------------------------------------------------
# 07 — the discussion prompts
# ---------------------------------------------------------------------------------------------------------------
def reference_fit(cfg: RunConfig, budget_bytes: int, precision: str = "fp16") -> RunConfig | None:
    """The source lesson's order: micro-batch first (keeping micro × accum × GPUs), then sequence length, then LoRA rank."""
    fits = lambda c: theory_peak(c, precision) <= budget_bytes  # noqa: E731
    per_gpu = cfg.micro_batch * cfg.grad_accum
    for mb in sorted((d for d in range(1, cfg.micro_batch + 1) if per_gpu % d == 0), reverse=True):
        c = cfg.replace(micro_batch=mb, grad_accum=per_gpu // mb)
        if fits(c):
            return c
    c = cfg.replace(micro_batch=1, grad_accum=per_gpu)
    while c.seq_len // 2 >= MIN_SEQ_LEN:
        c = c.replace(seq_len=c.seq_len // 2)
        if fits(c):
            return c
    while c.lora_r > 1:
        c = c.replace(lora_r=c.lora_r // 2)
        if fits(c):
            return c
    return None


def reference_hours(shape: ModelShape, cfg: RunConfig, n_tokens: float, peak_flops: float, mfu: float) -> float:
    """tokens × (step FLOPs / step tokens) / (GPUs × peak × mfu) seconds, / 3600 for hours."""
    f = theory.predict_step_flops(shape, cfg)
    return n_tokens * f["step"] / f["tokens"] / (cfg.num_gpus * peak_flops * mfu) / 3600
