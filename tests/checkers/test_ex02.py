"""Exercises 02 (checkpointing): the checkpointed activations and checkpoint segments checkers against right and
wrong answers."""
import math

import pytest

import checker_contract as contract
from labkit import checkers as E


# ---------------------------------------------------------------------------------------------------------------
# Correct answers (the same logic as the solution notebook)
# ---------------------------------------------------------------------------------------------------------------
def checkpointed_bytes(b, s, h, layers, precision):
    return b * s * h * layers * {"fp32": 4, "fp16": 2, "bf16": 2}[precision]


def best_segments(layers, a, f):
    return min(range(1, layers + 1), key=lambda k: E.segment_memory(layers, k, a, f))


RIGHT = {"check_checkpointed_activations": checkpointed_bytes, "check_best_segments": best_segments}


# ---------------------------------------------------------------------------------------------------------------
# Plausible wrong answers: (checker, what the learner got wrong, answer, a phrase the hint must contain)
# ---------------------------------------------------------------------------------------------------------------
WRONG = [
    ("check_checkpointed_activations", "always 2 bytes", lambda b, s, h, L, p: b * s * h * L * 2, "fp32"),
    ("check_checkpointed_activations", "one layer", lambda b, s, h, L, p: checkpointed_bytes(b, s, h, 1, p),
     "number of layers"),
    ("check_best_segments", "√L", lambda L, a, f: max(1, min(L, round(math.sqrt(L)))), "√L is best only"),
    ("check_best_segments", "always L", lambda L, a, f: L, "one checkpoint per layer"),
    ("check_best_segments", "⌊L/k⌋ instead of ⌈L/k⌉",
     lambda L, a, f: min(range(1, L + 1), key=lambda k: k * a + (L // k) * f), "try every k"),
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
