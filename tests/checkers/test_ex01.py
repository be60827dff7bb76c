"""Exercises 01 (where memory goes): the LoRA parameters, adapter state and logits checkers against right and wrong
answers, and how byte counts are shown."""
import numpy as np
import pytest

import checker_contract as contract
from labkit import checkers as E
from labkit.units import fmt_bytes_exact


# ---------------------------------------------------------------------------------------------------------------
# Correct answers (the same logic as the solution notebook)
# ---------------------------------------------------------------------------------------------------------------
def lora_params(shape, r, targets):
    d = shape.linear_dims()
    return shape.layers * sum(r * (d[t][0] + d[t][1]) for t in targets)


def adapter_state(n, optim):
    return {"weights": 4 * n, "gradients": 4 * n, "optimizer": (8 if optim == "adamw" else 2) * n}


def logits_bytes(b, s, vocab):
    return b * s * vocab * 4


RIGHT = {"check_lora_params": lora_params, "check_adapter_state": adapter_state, "check_logits_bytes": logits_bytes}


# ---------------------------------------------------------------------------------------------------------------
# Plausible wrong answers: (checker, what the learner got wrong, answer, a phrase the hint must contain)
# ---------------------------------------------------------------------------------------------------------------
def _swap(shape, **kw):
    return shape.__class__(**{**shape.to_dict(), **kw})


WRONG = [
    ("check_lora_params", "A only", lambda s, r, t: s.layers * sum(r * s.linear_dims()[x][0] for x in t),
     "count both"),
    ("check_lora_params", "one layer", lambda s, r, t: lora_params(s, r, t) // s.layers, "number of layers"),
    ("check_lora_params", "k/v as wide as q", lambda s, r, t: lora_params(_swap(s, kv_heads=s.heads), r, t), "GQA"),
    ("check_lora_params", "a dense delta", lambda s, r, t: s.layers * sum(
        s.linear_dims()[x][0] * s.linear_dims()[x][1] for x in t), "not d_in·d_out"),
    ("check_adapter_state", "8-bit Adam as one byte", lambda n, o: {
        **adapter_state(n, o), "optimizer": (8 if o == "adamw" else 1) * n}, "two moments"),
    ("check_adapter_state", "8-bit Adam as 8 bytes", lambda n, o: {**adapter_state(n, o), "optimizer": 8 * n},
     "one byte"),
    ("check_adapter_state", "fp16 gradients", lambda n, o: {**adapter_state(n, o), "gradients": 2 * n}, "fp32"),
    ("check_adapter_state", "fp16 adapters", lambda n, o: {**adapter_state(n, o), "weights": 2 * n}, "peft keeps"),
    ("check_adapter_state", "a key missing", lambda n, o: {"weights": 4 * n, "gradients": 4 * n}, "keys"),
    ("check_logits_bytes", "fp16 logits", lambda b, s, v: b * s * v * 2, "upcasts the logits to fp32"),
    ("check_logits_bytes", "batch forgotten", lambda b, s, v: s * v * 4, "multiply by micro_batch"),
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


def test_byte_counts_are_shown_by_labkit_units_for_a_numpy_answer_too(capsys):
    """The checkers show bytes as labkit.units.fmt_bytes_exact does; np.prod hands back np.int64, shown the same."""
    assert fmt_bytes_exact(1_707_012) == "1,707,012 B (0.002 GiB)" and fmt_bytes_exact(512) == "512 B"
    result = E.check_logits_bytes(lambda b, s, v: np.prod([b, s, v, 2]))          # fp16 logits: 2 bytes, not 4
    out = capsys.readouterr().out
    assert not result and "np.int64" not in out and "upcasts the logits to fp32" in out
    assert f"got:      {fmt_bytes_exact(2 * 512 * 128_256 * 2)}\n" in out           # the first case: llama-3.2-1b
