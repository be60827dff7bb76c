"""Checkers of exercises 06 (debugging OOM): the largest micro-batch search on a GPU that runs out of memory, and
the Axolotl rules a config breaks."""
from __future__ import annotations

import math

import torch

from labkit.checkers._engine import CheckResult, Failure, call_learner, raised_text, run_cases
from labkit.checkers._fixtures import FakeGPU
from labkit.checkers._references import reference_axolotl_problems


def check_largest_micro_batch(largest_micro_batch) -> CheckResult:
    """`largest_micro_batch(train_step, lo, hi, free_memory) -> int | None`: the largest micro-batch in [lo, hi]
    whose train step runs, found with few tries, recovering from every OOM; None if even lo fails. Other errors
    must not be swallowed."""
    specs = [(10, 1, 64), (64, 1, 64), (1, 1, 64), (0, 1, 64), (37, 1, 128), (5, 4, 8), (3, 4, 8), (1000, 1, 16),
             (23, 1, 1000)]
    cases = []
    for limit, lo, hi in specs:
        def case(limit=limit, lo=lo, hi=hi):
            label = f"largest_micro_batch(train_step, {lo}, {hi}, free_memory)  # fits up to {limit}"
            exp = min(limit, hi) if limit >= lo else None
            gpu = FakeGPU(limit)
            status, got = call_learner(largest_micro_batch, gpu.train_step, lo, hi, gpu.free_memory)
            allowed = 2 * math.ceil(math.log2(hi - lo + 1)) + 2
            if status == "raised":
                hint = ""
                if isinstance(got, torch.OutOfMemoryError):
                    hint = ("catch torch.OutOfMemoryError around each try, free the memory (free_memory()) and go on"
                            if gpu.frees == 0 else "after an OOM call free_memory() before the next try")
                return Failure(label, repr(exp), raised_text(got), hint)
            outside = [t for t in gpu.tries if not lo <= t <= hi]
            if outside:
                return Failure(label, f"tries within [{lo}, {hi}]", f"tried {outside[:5]}", "stay between lo and hi")
            if got != exp:
                hint = "keep the largest size that ran and the smallest that failed; bisect between them"
                oom_then_more = any(gpu.tries[i] <= limit for i in range(1, len(gpu.tries))
                                    if any(t > limit for t in gpu.tries[:i]))
                if gpu.frees == 0 and oom_then_more:
                    hint = ("after the first OOM every try failed: the failed step's memory was never freed — call "
                            "free_memory() after catching the OOM")
                return Failure(label, repr(exp), f"{got!r} after trying {gpu.tries}", hint)
            if gpu.dirty:
                return Failure(label, "memory freed after the last OOM", "the last OOM was left unfreed",
                               "call free_memory() after every OOM, the last one too: training runs next")
            if len(gpu.tries) > allowed:
                return Failure(label, f"at most {allowed} tries", f"{len(gpu.tries)} tries",
                               "each try is a real forward + backward: double, then bisect (binary search), "
                               "instead of stepping one by one")
            return None
        cases.append(case)

    def other_errors():
        label = "largest_micro_batch(train_step, 1, 64, free_memory)  # train_step raises a dtype error"
        gpu = FakeGPU(64, error=RuntimeError("expected scalar type Half but found Float"))
        status, got = call_learner(largest_micro_batch, gpu.train_step, 1, 64, gpu.free_memory)
        if status == "raised" and isinstance(got, RuntimeError) and not isinstance(got, torch.OutOfMemoryError):
            return None
        return Failure(label, "the RuntimeError to propagate", raised_text(got) if status == "raised" else repr(got),
                       "catch torch.OutOfMemoryError only: any other error is a bug that the search must not hide")
    cases.append(other_errors)
    return run_cases("check_largest_micro_batch", cases)


AXOLOTL_RULES = {  # rule number → what it asks; reference_axolotl_problems says which a config breaks
    1: "set micro_batch_size and gradient_accumulation_steps, not a raw batch_size",
    2: "eval_batch_size must equal micro_batch_size",
    3: "pad_to_sequence_len: true, so every batch has one shape",
    4: "a full fine-tune in fp16 with sample_packing needs flash_attention (or use an adapter)",
    5: "bf16: true needs compute capability ≥ 8.0; use bf16: auto or fp16",
    6: "fp8 gives no speed-up without torch_compile",
}

# The course recipe as an Axolotl config; each of AXOLOTL_CASES changes a few keys (None removes one)
RECIPE = {"adapter": "qlora", "micro_batch_size": 2, "gradient_accumulation_steps": 16, "eval_batch_size": 2,
          "pad_to_sequence_len": True, "bf16": "auto", "fp16": None, "sample_packing": False,
          "flash_attention": False, "sdp_attention": True}

AXOLOTL_CASES = [  # (what, changes to the recipe, capability)
    ("the course recipe on a T4", {}, (7, 5)),
    ("a raw batch size", {"batch_size": 32, "micro_batch_size": None, "gradient_accumulation_steps": None}, (7, 5)),
    ("eval batch 8, micro-batch 2", {"eval_batch_size": 8}, (7, 5)),
    ("no eval_batch_size at all (it defaults to the micro-batch)", {"eval_batch_size": None}, (7, 5)),
    ("padding off", {"pad_to_sequence_len": False}, (7, 5)),
    ("full fine-tune, fp16, packing, no flash attention",
     {"adapter": None, "fp16": True, "bf16": False, "sample_packing": True}, (7, 5)),
    ("the same with a LoRA adapter", {"adapter": "lora", "fp16": True, "bf16": False, "sample_packing": True}, (7, 5)),
    ("full fine-tune, fp16, packing, with flash attention",
     {"adapter": None, "fp16": True, "bf16": False, "sample_packing": True, "flash_attention": True}, (8, 0)),
    ("full fine-tune in fp16 without packing", {"adapter": None, "fp16": True, "bf16": False}, (7, 5)),
    ("bf16: true on a T4", {"bf16": True}, (7, 5)),
    ("bf16: true on an A100", {"bf16": True}, (8, 0)),
    ("fp8 without torch_compile", {"fp8": True, "bf16": True}, (9, 0)),
    ("fp8 with torch_compile", {"fp8": True, "bf16": True, "torch_compile": True}, (9, 0)),
    ("three problems at once", {"batch_size": 64, "eval_batch_size": 16, "pad_to_sequence_len": None}, (8, 6)),
]


def check_axolotl_rules(axolotl_problems) -> CheckResult:
    """`axolotl_problems(cfg, capability) -> set of rule numbers` (1–6, see AXOLOTL_RULES) broken by an
    Axolotl-style config dict on a GPU of that compute capability."""
    cases = []
    for what, changes, cap in AXOLOTL_CASES:
        def case(what=what, changes=changes, cap=cap):
            cfg = {k: v for k, v in {**RECIPE, **changes}.items() if v is not None}
            label = f"{what}: {changes or 'recipe'}, capability {cap}"
            exp = reference_axolotl_problems(cfg, cap)
            status, got = call_learner(axolotl_problems, dict(cfg), cap)
            if status == "raised":
                return Failure(label, f"rules {sorted(exp)}", raised_text(got))
            try:
                got_set = {int(x) for x in got}
            except Exception:  # noqa: BLE001
                return Failure(label, f"rules {sorted(exp)}", repr(got)[:200], "return a set of rule numbers")
            if got_set == exp:
                return None
            missed, extra = sorted(exp - got_set), sorted(got_set - exp)
            parts = [f"missed rule {r}: {AXOLOTL_RULES.get(r, '?')}" for r in missed]
            parts += [f"rule {r} does not apply here ({AXOLOTL_RULES.get(r, 'no such rule')})" for r in extra]
            return Failure(label, f"rules {sorted(exp)}", f"rules {sorted(got_set)}", "; ".join(parts))
        cases.append(case)
    return run_cases("check_axolotl_rules", cases)
