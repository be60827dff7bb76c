"""Exercises 06 (debugging OOM): the largest micro-batch search and Axolotl rules checkers against right and wrong
answers, and the FakeGPU they run on."""
import pytest
import torch

import checker_contract as contract
from labkit import checkers as E
from labkit.checkers._references import reference_axolotl_problems


# ---------------------------------------------------------------------------------------------------------------
# Correct answers (the same logic as the solution notebook)
# ---------------------------------------------------------------------------------------------------------------
def largest_micro_batch(train_step, lo, hi, free_memory):
    def fits(n):
        try:
            train_step(n)
            return True
        except torch.OutOfMemoryError:
            free_memory()
            return False
    good, bad, n = None, None, lo
    while True:
        if fits(n):
            good = n
            if n == hi:
                return good
            n = min(2 * n, hi)
        else:
            bad = n
            break
    if good is None:
        return None
    while bad - good > 1:
        mid = (good + bad) // 2
        good, bad = (mid, bad) if fits(mid) else (good, mid)
    return good


def axolotl_problems(cfg, cap):
    return reference_axolotl_problems(cfg, cap)


RIGHT = {"check_largest_micro_batch": largest_micro_batch, "check_axolotl_rules": axolotl_problems}


# ---------------------------------------------------------------------------------------------------------------
# Plausible wrong answers: (checker, what the learner got wrong, answer, a phrase the hint must contain)
# ---------------------------------------------------------------------------------------------------------------
def _no_free(train_step, lo, hi, free_memory):
    return largest_micro_batch(train_step, lo, hi, lambda: None)


def _catch_everything(train_step, lo, hi, free_memory):
    def fits(n):
        try:
            train_step(n)
            return True
        except Exception:
            free_memory()
            return False
    best, a, b = None, lo, hi
    while a <= b:
        m = (a + b) // 2
        if fits(m):
            best, a = m, m + 1
        else:
            b = m - 1
    return best


def _linear_scan(train_step, lo, hi, free_memory):
    best = None
    for n in range(lo, hi + 1):
        try:
            train_step(n)
            best = n
        except torch.OutOfMemoryError:
            free_memory()
            break
    return best


def _returns_last_try(train_step, lo, hi, free_memory):
    a, b, n = lo, hi, None
    while a <= b:
        n = (a + b) // 2
        try:
            train_step(n)
            a = n + 1
        except torch.OutOfMemoryError:
            free_memory()
            b = n - 1
    return n


def _no_free_after_last(train_step, lo, hi, free_memory):
    calls = {"oom": 0}

    def fits(n):
        try:
            train_step(n)
            return True
        except torch.OutOfMemoryError:
            calls["oom"] += 1
            return False
    # frees before each next try, never after the final one
    good, a, b = None, lo, hi
    while a <= b:
        if calls["oom"]:
            free_memory()
            calls["oom"] = 0
        m = (a + b) // 2
        if fits(m):
            good, a = m, m + 1
        else:
            b = m - 1
    return good


WRONG = [
    ("check_largest_micro_batch", "memory never freed", _no_free, "free_memory()"),
    ("check_largest_micro_batch", "catches every exception", _catch_everything, "OutOfMemoryError only"),
    ("check_largest_micro_batch", "linear scan", _linear_scan, "binary search"),
    ("check_largest_micro_batch", "returns the last size tried", _returns_last_try, "bisect"),
    ("check_largest_micro_batch", "last OOM left unfreed", _no_free_after_last, "the last one too"),
    ("check_axolotl_rules", "any eval_batch_size flagged",
     lambda c, cap: axolotl_problems(c, cap) | ({2} if "eval_batch_size" in c else set()), "rule 2 does not apply"),
    ("check_axolotl_rules", "bf16: auto flagged on a T4",
     lambda c, cap: axolotl_problems(c, cap) | ({5} if c.get("bf16") and cap < (8, 0) else set()),
     "rule 5 does not apply"),
    ("check_axolotl_rules", "fp16 alone flagged",
     lambda c, cap: axolotl_problems(c, cap) | ({4} if c.get("fp16") and not c.get("adapter") else set()),
     "rule 4 does not apply"),
    ("check_axolotl_rules", "fp8 rule missing", lambda c, cap: axolotl_problems(c, cap) - {6}, "missed rule 6"),
]


# ---------------------------------------------------------------------------------------------------------------
# The checkers
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(RIGHT))
def test_checker_passes_a_right_answer_with_its_fixed_line(name, capsys):
    contract.passes_a_right_answer_with_its_fixed_line(name, RIGHT[name], capsys)


@pytest.mark.parametrize("name", sorted(RIGHT))
def test_checker_says_not_implemented_for_a_stub(name, capsys):
    contract.says_not_implemented_for_a_stub(name, contract.stub, capsys)


@pytest.mark.parametrize("name", sorted(RIGHT))
def test_checker_survives_broken_learner_code(name, capsys):
    contract.survives_broken_learner_code(name, capsys)


@pytest.mark.parametrize("name,what,answer,hint", WRONG, ids=contract.wrong_ids(WRONG))
def test_checker_catches_a_plausible_wrong_answer(name, what, answer, hint, capsys):
    contract.catches_a_plausible_wrong_answer(name, what, answer, hint, capsys)


def test_fake_gpu_keeps_failing_until_freed():
    gpu = E.FakeGPU(4)
    gpu.train_step(4)
    with pytest.raises(torch.OutOfMemoryError):
        gpu.train_step(5)
    with pytest.raises(torch.OutOfMemoryError, match="never|still"):
        gpu.train_step(1)
    gpu.free_memory()
    gpu.train_step(1)
