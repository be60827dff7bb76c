"""Checkers of exercises 05 (QLoRA all together): the memory budget of a QLoRA run, and the recipe's keyword
arguments for bitsandbytes, peft and transformers."""
from __future__ import annotations

import torch

from labkit import theory
from labkit.checkers._engine import CheckResult, Failure, call_learner, dict_case, matching_hint, raised_text, run_cases
from labkit.checkers._references import reference_budget
from labkit.config import RunConfig, resolve_precision
from labkit.shapes import PRESETS, ModelShape

# The keys of qlora_budget's answer, and how far each may be from labkit.theory's figure
BUDGET_KEYS = ("weights_4bit", "weights_16bit", "adapters", "gradients", "optimizer", "activations", "logits")
BUDGET_TOLERANCE = {"weights_4bit": 0.05, "weights_16bit": 0.01, "adapters": 0.005, "gradients": 0.005,
                    "optimizer": 0.08, "activations": 0.005, "logits": 0.01}


def check_qlora_budget(qlora_budget) -> CheckResult:
    """`qlora_budget(shape, cfg) -> dict` of bytes for an fp16 QLoRA run with checkpointing on a T4, compared
    per component with labkit.theory (4-bit weights within 5%, optimizer within 8%, the rest within 0.5–1%)."""
    specs = [("llama-3.1-8b", dict(micro_batch=1, seq_len=2048)),
             ("llama-3.1-8b", dict(micro_batch=4, seq_len=2048, grad_accum=8)),
             ("llama-3.2-1b", dict(micro_batch=2, seq_len=512, grad_accum=16)),
             ("qwen2.5-0.5b", dict(micro_batch=2, seq_len=1024, lora_targets=(
                 "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"))),
             ("smollm2-360m", dict(micro_batch=4, seq_len=1024, lora_r=32, optim="adamw"))]
    cases = []
    for model, kw in specs:
        shape = PRESETS[model].shape
        cfg = RunConfig(model=model, gradient_checkpointing=True, **kw)
        exp = reference_budget(shape, cfg)
        args = ", ".join(f"{k}={v!r}" for k, v in kw.items())
        cases.append(dict_case(f"qlora_budget({model}, RunConfig({args}))", qlora_budget, (shape, cfg), exp,
                               BUDGET_TOLERANCE, _budget_hint(shape, cfg)))
    return run_cases("check_qlora_budget", cases)


def _budget_hint(shape: ModelShape, cfg: RunConfig):
    """hint(key, got): what a wrong byte count for one component most likely means (matched within 5%)."""
    T, h, V, L = cfg.micro_batch * cfg.seq_len, shape.hidden, shape.vocab, shape.layers
    linear = L * sum(a * b for a, b in shape.linear_dims().values())      # decoder Linear weights, all layers
    n = theory.trainable_params(shape, cfg)
    embed = V * h * 2                                                      # one vocab × hidden matrix in fp16
    matrices = 1 if shape.tied else 2                                      # embeddings, and lm_head if untied
    adamw = cfg.optim == "adamw"
    wrong = {
        "weights_4bit": {
            "the decoder Linears are 4-bit: ½ byte per weight, not 2": linear * 2,
            "bitsandbytes leaves the embeddings and lm_head in 16-bit: only the decoder Linears are 4-bit": (
                linear / 2 + embed * matrices / 4)},
        "weights_16bit": {
            "a tied model stores one embedding matrix, used again as lm_head": embed * 2 if shape.tied else None,
            "an untied model stores the embeddings and lm_head: two matrices": embed / 2 if not shape.tied else None,
            "the embeddings stay in fp16: 2 bytes per value": embed / 2,
            "fp16 is 2 bytes per value, not 4": embed * matrices * 2,
            "embeddings and lm_head are not quantised; they stay in 16-bit": 0},
        "adapters": {"peft keeps the LoRA adapters in fp32: 4 bytes per parameter": n * 2},
        "gradients": {"gradients of fp32 adapters are fp32: 4 bytes per parameter": n * 2},
        "optimizer": {
            "8-bit Adam keeps each of its two moments in one byte: ≈ 2 bytes per parameter": (
                n * 8 if not adamw else None),
            "torch AdamW keeps two fp32 moments: 8 bytes per parameter": n * 2 if adamw else None,
            "the optimizer line is the moments only": n * 16},
        "activations": {
            "a T4 runs fp16: 2 bytes per saved value": T * h * L * 4,
            "one checkpointed input per layer: multiply by the layers": T * h * 2},
        "logits": {
            "the loss works on fp32 logits: 4 bytes each, whatever the compute dtype": T * V * 2,
            "the logits have vocab entries per token, not hidden": T * h * 4},
    }
    rule = {"weights_4bit": "Linear weights × ½ byte, plus the quantisation constants (≈ 0.127 bit/weight with "
                            "double quant)",
            "weights_16bit": "embeddings (vocab × hidden, and lm_head if untied) and norms, 2 bytes each",
            "adapters": "LoRA parameters × 4 bytes", "gradients": "one fp32 gradient per LoRA parameter",
            "optimizer": "moments only: ≈ 2 B/param for 8-bit Adam, 8 B/param for AdamW",
            "activations": "checkpointing keeps one fp16 input per layer: b × s × hidden × layers × 2",
            "logits": "b × s × vocab × 4 bytes (the fp32 log-softmax the loss keeps)"}

    def hint(key, got):
        return matching_hint(got, wrong.get(key, {}), rel=0.05) or rule[key]
    return hint


def check_qlora_kwargs(qlora_kwargs) -> CheckResult:
    """`qlora_kwargs(capability) -> {"bnb": {...}, "lora": {...}, "training": {...}}`: the course recipe for a GPU
    (keyword arguments of BitsAndBytesConfig, LoraConfig and TrainingArguments)."""
    from peft import LoraConfig
    from transformers import BitsAndBytesConfig

    cases = []
    for name, cap in (("Tesla T4", (7, 5)), ("A100", (8, 0)), ("L4", (8, 9)), ("V100", (7, 0))):
        def case(name=name, cap=cap):
            label = f"qlora_kwargs({cap})  # {name}"
            prec = resolve_precision("auto", "cuda", cap)
            dtype = torch.bfloat16 if prec == "bf16" else torch.float16
            status, got = call_learner(qlora_kwargs, cap)
            if status == "raised":
                return Failure(label, "three dicts of keyword arguments", raised_text(got))
            if not isinstance(got, dict) or not all(isinstance(got.get(k), dict) for k in ("bnb", "lora", "training")):
                return Failure(label, 'a dict with the dicts "bnb", "lora" and "training"', repr(got)[:200])
            try:
                bnb = BitsAndBytesConfig(**got["bnb"])
            except Exception as e:  # noqa: BLE001
                return Failure(label, "BitsAndBytesConfig(**bnb) to work", raised_text(e))
            try:
                lora = LoraConfig(**got["lora"])
            except Exception as e:  # noqa: BLE001
                return Failure(label, "LoraConfig(**lora) to work", raised_text(e))
            t = got["training"]
            ckpt = t.get("gradient_checkpointing", t.get("activation_checkpointing"))
            checks = [  # (ok, what is expected, keys to show, hint)
                (bnb.load_in_4bit is True, "load_in_4bit=True", ["load_in_4bit"], "QLoRA loads the base in 4 bits"),
                (bnb.bnb_4bit_quant_type == "nf4", "bnb_4bit_quant_type='nf4'", ["bnb_4bit_quant_type"],
                 "NormalFloat-4 is QLoRA's data type"),
                (bnb.bnb_4bit_use_double_quant is True, "bnb_4bit_use_double_quant=True",
                 ["bnb_4bit_use_double_quant"], "double quant cuts the constants from 0.5 to ≈ 0.127 bit per weight"),
                (bnb.bnb_4bit_compute_dtype == dtype, f"bnb_4bit_compute_dtype={dtype}", ["bnb_4bit_compute_dtype"],
                 "the 4-bit compute dtype must match the training precision: float16 below compute capability 8.0 "
                 "(bf16 there is the source lesson's bug), bfloat16 from 8.0"),
                (lora.r == 16 and lora.lora_alpha == 32, "r=16, lora_alpha=32", ["r", "lora_alpha"],
                 "the course's adapter: rank 16, alpha 2r"),
                (set(lora.target_modules or ()) == {"q_proj", "k_proj", "v_proj", "o_proj"},
                 "target_modules=[q_proj, k_proj, v_proj, o_proj]", ["target_modules"],
                 "adapt the four attention projections"),
                (lora.lora_dropout == 0.05 and lora.bias == "none", "lora_dropout=0.05, bias='none'",
                 ["lora_dropout", "bias"], ""),
                (str(getattr(lora.task_type, "value", lora.task_type)) == "CAUSAL_LM", "task_type='CAUSAL_LM'",
                 ["task_type"], ""),
                (t.get("per_device_train_batch_size") == 2 and t.get("gradient_accumulation_steps") == 16,
                 "per_device_train_batch_size=2, gradient_accumulation_steps=16",
                 ["per_device_train_batch_size", "gradient_accumulation_steps"],
                 "micro-batch and accumulation, never a raw batch size: 2 × 16 = 32 (Axolotl rule 1)"),
                (t.get("per_device_eval_batch_size") == t.get("per_device_train_batch_size"),
                 "per_device_eval_batch_size equal to the train micro-batch", ["per_device_eval_batch_size"],
                 "a bigger eval batch changes the memory profile and can OOM after training fit (Axolotl rule 2)"),
                (ckpt is True, "gradient_checkpointing=True", ["gradient_checkpointing"],
                 "recompute activations in backward: an 8B model on a T4 needs it"),
                (bool(t.get("fp16")) == (prec == "fp16") and bool(t.get("bf16")) == (prec == "bf16"),
                 f"fp16={prec == 'fp16'}, bf16={prec == 'bf16'}", ["fp16", "bf16"],
                 "exactly one of fp16/bf16, chosen from the compute capability (bf16 from 8.0)"),
                (t.get("optim") == "paged_adamw_8bit", "optim='paged_adamw_8bit'", ["optim"], "8-bit paged AdamW"),
                (t.get("learning_rate") == 2e-4, "learning_rate=2e-4", ["learning_rate"], ""),
                (t.get("save_strategy") == "steps", "save_strategy='steps'", ["save_strategy"],
                 "save often: an OOM mid-run can corrupt a checkpoint"),
            ]
            for ok, want, keys, hint in checks:
                if not ok:
                    return Failure(label, want, _shown(got, keys), hint)
            return None
        cases.append(case)
    return run_cases("check_qlora_kwargs", cases)


def _shown(got: dict, keys) -> str:
    """What the answer gives for `keys`, found in its bnb, lora or training dict: "training['fp16']=True, bf16 not
    given"."""
    out = []
    for k in keys:
        for part in ("bnb", "lora", "training"):
            if k in got[part]:
                out.append(f"{part}[{k!r}]={got[part][k]!r}")
                break
        else:
            out.append(f"{k} not given")
    return ", ".join(out)
