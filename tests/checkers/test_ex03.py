"""Exercises 03 (batch and accumulation): the effective batch and gradient accumulation checkers against right and
wrong answers."""
import math

import pytest
import torch
import torch.nn.functional as F

import checker_contract as contract
from labkit import checkers as E
from labkit.checkers._references import reference_grads
from labkit.checkers.ex03 import max_diff


# ---------------------------------------------------------------------------------------------------------------
# Correct answers (the same logic as the solution notebook)
# ---------------------------------------------------------------------------------------------------------------
def plan_accumulation(eff, micro, gpus):
    if min(eff, micro, gpus) < 1 or eff % (micro * gpus):
        raise ValueError("no whole accumulation gives that batch")
    return eff // (micro * gpus)


def accumulate_gradients(model, micro_batches):
    model.zero_grad(set_to_none=True)
    n = sum(int((lab != -100).sum()) for _, lab in micro_batches)
    for ids, lab in micro_batches:
        (F.cross_entropy(model(ids).flatten(0, 1), lab.flatten(), ignore_index=-100, reduction="sum") / n).backward()


RIGHT = {"check_accumulation": plan_accumulation, "check_grad_accumulation": accumulate_gradients}


# ---------------------------------------------------------------------------------------------------------------
# Plausible wrong answers: (checker, what the learner got wrong, answer, a phrase the hint must contain)
# ---------------------------------------------------------------------------------------------------------------
def _mean_per_micro(model, mbs):
    model.zero_grad()
    for ids, lab in mbs:
        (F.cross_entropy(model(ids).flatten(0, 1), lab.flatten(), ignore_index=-100) / len(mbs)).backward()


def _sum_of_means(model, mbs):
    model.zero_grad()
    for ids, lab in mbs:
        F.cross_entropy(model(ids).flatten(0, 1), lab.flatten(), ignore_index=-100).backward()


def _no_zero_grad(model, mbs):
    n = sum(int((lab != -100).sum()) for _, lab in mbs)
    for ids, lab in mbs:
        (F.cross_entropy(model(ids).flatten(0, 1), lab.flatten(), ignore_index=-100, reduction="sum") / n).backward()


def _per_sequence(model, mbs):
    model.zero_grad()
    n = sum(ids.shape[0] for ids, _ in mbs)
    for ids, lab in mbs:
        (F.cross_entropy(model(ids).flatten(0, 1), lab.flatten(), ignore_index=-100, reduction="sum") / n).backward()


def _steps_optimizer(model, mbs):
    accumulate_gradients(model, mbs)
    torch.optim.SGD(model.parameters(), lr=0.1).step()


WRONG = [
    ("check_accumulation", "GPUs forgotten", lambda e, m, g: e // m, "each GPU"),
    ("check_accumulation", "rounds instead of refusing", lambda e, m, g: math.ceil(e / max(1, m * g)), "ValueError"),
    ("check_accumulation", "true division", lambda e, m, g: e / (m * g), "whole number"),
    ("check_grad_accumulation", "mean per micro-batch ÷ steps", _mean_per_micro, "token-count pitfall"),
    ("check_grad_accumulation", "means added up", _sum_of_means, "unscaled"),
    ("check_grad_accumulation", "old gradients kept", _no_zero_grad, "zero them"),
    ("check_grad_accumulation", "normalised by sequences", _per_sequence, "not by the number of sequences"),
    ("check_grad_accumulation", "steps an optimizer", _steps_optimizer, "optimizer step comes after"),
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


def test_grad_accumulation_cases_really_need_token_normalisation():
    """The uneven case must separate the naive loop from the right one by far more than float noise."""
    model = E.TinyLM(seed=0)
    mbs = E.make_micro_batches(4, 2, 8, seed=1, lengths=[8, 8, 8, 7, 1, 2, 1, 1])
    good = reference_grads(model, mbs, "big")
    naive = reference_grads(model, mbs, "mean_per_micro")
    assert max_diff(good, naive) > 1e-2
