"""Checkers for the exercise notebooks (`exercises/`, worked answers in `solutions/`): what a notebook sees as `ex`.

    from labkit import checkers as ex
    ex.check_accumulation(plan_accumulation)      # ✓ effective batch: all 9 cases pass

Every checker takes the learner's function (or class), runs it on real test cases and compares the answers with
references computed by labkit itself (the theory, the config rules), by torch (gradients, `GradScaler`) or by a
brute-force search. It then prints either one fixed line or, for each failing case, what was expected, what came
back and a hint; it never raises on a wrong answer. A function that still raises `NotImplementedError` (the stub in
`exercises/`) gets "not implemented yet" instead. The cases are fixed (seeded where random), so the pass line is
the same on every machine: the solution notebooks pin it with `# NBVAL_CHECK_OUTPUT`, and CI runs them on a CPU.

This module only gathers what notebooks use. Where things live:
    _engine        CheckResult, running the cases, hint matching, the pass/fail lines
    _fixtures      TinyLM, make_micro_batches, FakeGPU, scaler_run, … (what checkers and notebooks build on)
    _references    the reference answers; only the checkers import them, and they are not re-exported here
    ex00 … ex07    the checkers of each exercise notebook
    build          generates exercises/ from solutions/
"""
from labkit.checkers._engine import MAX_SHOWN, TITLES, CheckResult, Failure, not_implemented_line, pass_line
from labkit.checkers._fixtures import (T4_TOTAL_MEMORY, FakeGPU, TinyLM, fp16_backward_hook, make_micro_batches,
                                       scaler_run, segment_memory, theory_peak)
from labkit.checkers.ex00 import check_param_count, check_weights_gib
from labkit.checkers.ex01 import check_adapter_state, check_logits_bytes, check_lora_params
from labkit.checkers.ex02 import check_best_segments, check_checkpointed_activations
from labkit.checkers.ex03 import check_accumulation, check_grad_accumulation
from labkit.checkers.ex04 import SCALER_SEQUENCES, check_loss_scaler, check_precision
from labkit.checkers.ex05 import check_qlora_budget, check_qlora_kwargs
from labkit.checkers.ex06 import AXOLOTL_RULES, check_axolotl_rules, check_largest_micro_batch
from labkit.checkers.ex07 import check_fit_on_t4, check_training_hours

__all__ = [
    # the checkers, in the order of the notebooks
    "check_param_count", "check_weights_gib",                                   # 00 warm-up
    "check_lora_params", "check_adapter_state", "check_logits_bytes",           # 01 where memory goes
    "check_checkpointed_activations", "check_best_segments",                    # 02 checkpointing
    "check_accumulation", "check_grad_accumulation",                            # 03 batch and accumulation
    "check_precision", "check_loss_scaler",                                     # 04 mixed precision
    "check_qlora_budget", "check_qlora_kwargs",                                 # 05 QLoRA
    "check_largest_micro_batch", "check_axolotl_rules",                         # 06 debugging OOM
    "check_fit_on_t4", "check_training_hours",                                  # 07 discussion
    # what the notebooks build on
    "T4_TOTAL_MEMORY", "segment_memory", "TinyLM", "make_micro_batches", "fp16_backward_hook", "scaler_run",
    "SCALER_SEQUENCES", "FakeGPU", "AXOLOTL_RULES", "theory_peak",
    # the verdicts (labkit.checkers.build pins the "not implemented" line from TITLES)
    "CheckResult", "Failure", "TITLES", "MAX_SHOWN", "pass_line", "not_implemented_line",
]
