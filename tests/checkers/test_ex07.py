"""Exercises 07 (discussion): the fit-on-a-T4 and training time checkers against right and wrong answers."""
import pytest

import checker_contract as contract
from labkit import checkers as E, theory
from labkit.checkers._references import reference_fit
from labkit.checkers.ex07 import FIT_CASES
from labkit.config import RunConfig


# ---------------------------------------------------------------------------------------------------------------
# Correct answers (the same logic as the solution notebook)
# ---------------------------------------------------------------------------------------------------------------
def fit_on_t4(cfg, budget):
    return reference_fit(cfg, budget)


def training_hours(shape, cfg, n_tokens, peak, mfu):
    f = theory.predict_step_flops(shape, cfg)
    return n_tokens * f["step"] / f["tokens"] / (cfg.num_gpus * peak * mfu) / 3600


RIGHT = {"check_fit_on_t4": fit_on_t4, "check_training_hours": training_hours}


# ---------------------------------------------------------------------------------------------------------------
# Plausible wrong answers: (checker, what the learner got wrong, answer, a phrase the hint must contain)
# ---------------------------------------------------------------------------------------------------------------
def _seq_first(cfg, budget):
    c = cfg
    while E.theory_peak(c) > budget and c.seq_len > 256:
        c = c.replace(seq_len=c.seq_len // 2)
    return c if E.theory_peak(c) <= budget else reference_fit(c, budget)


def _always_micro_one(cfg, budget):
    return reference_fit(cfg.replace(micro_batch=1, grad_accum=cfg.micro_batch * cfg.grad_accum), budget)


def _accum_unchanged(cfg, budget):
    for mb in range(cfg.micro_batch, 0, -1):
        if E.theory_peak(cfg.replace(micro_batch=mb)) <= budget:
            return cfg.replace(micro_batch=mb)
    return None


WRONG = [
    ("check_fit_on_t4", "sequence length cut first", _seq_first, "cut the micro-batch first"),
    ("check_fit_on_t4", "micro-batch 1 always", _always_micro_one, "largest micro-batch that fits"),
    ("check_fit_on_t4", "accumulation not raised", _accum_unchanged, "keep the effective batch"),
    ("check_training_hours", "GPUs forgotten",
     lambda s, c, n, p, m: training_hours(s, c.replace(num_gpus=1), n, p, m), "divide by num_gpus"),
    ("check_training_hours", "seconds", lambda s, c, n, p, m: training_hours(s, c, n, p, m) * 3600, "3600"),
    ("check_training_hours", "peak, not sustained", lambda s, c, n, p, m: training_hours(s, c, n, p, 1.0), "mfu"),
    ("check_training_hours", "recompute forgotten",
     lambda s, c, n, p, m: training_hours(s, c.replace(gradient_checkpointing=False), n, p, m), "checkpointing"),
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


def test_reference_fit_keeps_the_effective_batch_and_fits():
    for _, kw, budget in FIT_CASES:
        cfg = RunConfig(**kw)
        got = reference_fit(cfg, budget)
        if got is not None:
            assert got.effective_batch == cfg.effective_batch and E.theory_peak(got) <= budget
    # the discussion prompt: 8B at 4 × 8 does not fit a T4; micro-batch 2 × 16 does (theory peak ≈ 13.4 GiB under
    # the 14.25 GiB budget, since the peak counts the largest phase, not the logits and a recomputed layer together)
    prompt = RunConfig(model="llama-3.1-8b", micro_batch=4, seq_len=2048, grad_accum=8)
    assert E.theory_peak(prompt) > FIT_CASES[0][2]
    assert reference_fit(prompt, FIT_CASES[0][2]) == prompt.replace(micro_batch=2, grad_accum=16)
