"""Exercises 00 (warm-up): the parameter count and weights-in-GiB checkers against right and wrong answers."""
import pytest

import checker_contract as contract


# ---------------------------------------------------------------------------------------------------------------
# Correct answers (the same logic as the solution notebook)
# ---------------------------------------------------------------------------------------------------------------
def count_params(shape):
    d = shape.linear_dims()
    per_layer = sum(i * o for i, o in d.values()) + 2 * shape.hidden
    if shape.qkv_bias:
        per_layer += d["q_proj"][1] + d["k_proj"][1] + d["v_proj"][1]
    return shape.vocab * shape.hidden * (1 if shape.tied else 2) + shape.layers * per_layer + shape.hidden


def weights_gib(n, dtype):
    return n * {"fp32": 4, "fp16": 2, "bf16": 2, "int8": 1, "nf4": 0.5}[dtype] / 1024 ** 3


RIGHT = {"check_param_count": count_params, "check_weights_gib": weights_gib}


# ---------------------------------------------------------------------------------------------------------------
# Plausible wrong answers: (checker, what the learner got wrong, answer, a phrase the hint must contain)
# ---------------------------------------------------------------------------------------------------------------
def _swap(shape, **kw):
    return shape.__class__(**{**shape.to_dict(), **kw})


WRONG = [
    ("check_param_count", "lm_head counted for a tied model",
     lambda s: count_params(s) + (s.vocab * s.hidden if s.tied else 0), "count it once"),
    ("check_param_count", "norms forgotten", lambda s: count_params(s) - (2 * s.layers + 1) * s.hidden, "RMSNorm"),
    ("check_param_count", "k/v as wide as q", lambda s: count_params(_swap(s, kv_heads=s.heads)), "grouped-query"),
    ("check_param_count", "Qwen2 biases forgotten", lambda s: count_params(_swap(s, qkv_bias=False)), "biases"),
    ("check_weights_gib", "GB instead of GiB", lambda n, d: weights_gib(n, d) * 1024 ** 3 / 1e9, "1024³"),
    ("check_weights_gib", "bits instead of bytes", lambda n, d: weights_gib(n, d) * 8, "bits"),
    ("check_weights_gib", "bf16 as 4 bytes", lambda n, d: weights_gib(n, "fp32" if d == "bf16" else d), "2 bytes"),
    ("check_weights_gib", "nf4 as a whole byte", lambda n, d: weights_gib(n, "int8" if d == "nf4" else d),
     "half a byte"),
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
