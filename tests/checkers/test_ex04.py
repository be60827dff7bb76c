"""Exercises 04 (mixed precision): the precision choice and loss scaling checkers against right and wrong answers."""
import pytest
import torch

import checker_contract as contract
from labkit import checkers as E


# ---------------------------------------------------------------------------------------------------------------
# Correct answers (the same logic as the solution notebook)
# ---------------------------------------------------------------------------------------------------------------
def choose_precision(cap, bf16_supported):
    return "fp32" if cap is None else ("bf16" if tuple(cap) >= (8, 0) else "fp16")


class LossScaler:
    def __init__(self, init_scale=2.0 ** 16, growth_factor=2.0, backoff_factor=0.5, growth_interval=2000):
        self.s, self.gf, self.bf, self.gi = float(init_scale), growth_factor, backoff_factor, growth_interval
        self.good, self.found_inf = 0, False

    def get_scale(self):
        return self.s

    def scale(self, loss):
        return loss * self.s

    def unscale_(self, opt):
        self.found_inf = False
        for g in opt.param_groups:
            for p in g["params"]:
                p.grad.div_(self.s)
                self.found_inf = self.found_inf or not bool(torch.isfinite(p.grad).all())
        return self.found_inf

    def step(self, opt):
        if not self.found_inf:
            opt.step()

    def update(self):
        if self.found_inf:
            self.s, self.good = self.s * self.bf, 0
        else:
            self.good += 1
            if self.good == self.gi:
                self.s, self.good = self.s * self.gf, 0


RIGHT = {"check_precision": choose_precision, "check_loss_scaler": LossScaler}


# ---------------------------------------------------------------------------------------------------------------
# Plausible wrong answers: (checker, what the learner got wrong, answer, a phrase the hint must contain)
# ---------------------------------------------------------------------------------------------------------------
class _NoUnscale(LossScaler):
    def unscale_(self, opt):
        self.found_inf = any(not bool(torch.isfinite(p.grad).all()) for g in opt.param_groups for p in g["params"])
        return self.found_inf


class _InfOnly(LossScaler):                      # misses nan
    def unscale_(self, opt):
        self.found_inf = False
        for g in opt.param_groups:
            for p in g["params"]:
                p.grad.div_(self.s)
                self.found_inf = self.found_inf or bool(torch.isinf(p.grad).any())
        return self.found_inf


class _NoBackoff(LossScaler):
    def update(self):
        if not self.found_inf:
            super().update()


class _GrowEveryStep(LossScaler):
    def update(self):
        self.s *= self.bf if self.found_inf else self.gf


class _NoRestartAfterSkip(LossScaler):
    def update(self):
        if self.found_inf:
            self.s *= self.bf
        else:
            self.good += 1
            if self.good % self.gi == 0:
                self.s *= self.gf


class _SkipOnlyBadTensor(LossScaler):
    def step(self, opt):
        for g in opt.param_groups:
            for p in g["params"]:
                if not bool(torch.isfinite(p.grad).all()):
                    p.grad = None
        opt.step()


class _ReturnsNothing(LossScaler):
    def unscale_(self, opt):
        super().unscale_(opt)


WRONG = [
    ("check_precision", "trusts is_bf16_supported", lambda c, s: "fp32" if c is None else ("bf16" if s else "fp16"),
     "emulation trap"),
    ("check_precision", "major > 8", lambda c, s: "fp32" if c is None else ("bf16" if c[0] > 8 else "fp16"),
     ">= (8, 0)"),
    ("check_precision", "major == 8", lambda c, s: "fp32" if c is None else ("bf16" if c[0] == 8 else "fp16"),
     "newer GPUs"),
    ("check_precision", "bf16 on a CPU", lambda c, s: "bf16" if c is None else choose_precision(c, s), "CPU"),
    ("check_loss_scaler", "no unscaling", _NoUnscale, "not unscaled"),
    ("check_loss_scaler", "nan not detected", _InfOnly, "nan too"),
    ("check_loss_scaler", "no backoff", _NoBackoff, "backoff_factor"),
    ("check_loss_scaler", "grows every step", _GrowEveryStep, "growth_interval good steps"),
    ("check_loss_scaler", "count not restarted after a skip", _NoRestartAfterSkip, "restart that count"),
    ("check_loss_scaler", "skips only the bad tensor", _SkipOnlyBadTensor, "whole step"),
    ("check_loss_scaler", "unscale_ returns nothing", _ReturnsNothing, "return True"),
]


# ---------------------------------------------------------------------------------------------------------------
# The checkers
# ---------------------------------------------------------------------------------------------------------------
class StubScaler(LossScaler):
    scale = unscale_ = step = update = contract.stub


STUB = {"check_precision": contract.stub, "check_loss_scaler": StubScaler}


@pytest.mark.parametrize("name", sorted(RIGHT))
def test_checker_passes_a_right_answer_with_its_fixed_line(name, capsys):
    contract.passes_a_right_answer_with_its_fixed_line(name, RIGHT[name], capsys)


@pytest.mark.parametrize("name", sorted(RIGHT))
def test_checker_says_not_implemented_for_a_stub(name, capsys):
    contract.says_not_implemented_for_a_stub(name, STUB[name], capsys)


@pytest.mark.parametrize("name", sorted(RIGHT))
def test_checker_survives_broken_learner_code(name, capsys):
    contract.survives_broken_learner_code(name, capsys)


@pytest.mark.parametrize("name,what,answer,hint", WRONG, ids=contract.wrong_ids(WRONG))
def test_checker_catches_a_plausible_wrong_answer(name, what, answer, hint, capsys):
    contract.catches_a_plausible_wrong_answer(name, what, answer, hint, capsys)


def test_loss_scaler_sequences_exercise_every_branch():
    """GradScaler itself must skip, back off and grow on the check's sequences, or the check proves little."""
    for _, init, interval, seq in E.SCALER_SEQUENCES:
        trail = E.scaler_run(None, seq, len(seq[0]), init, interval, mine=False)
        scales = [init] + [s for _, s, _ in trail]
        assert any(f for f, _, _ in trail)                                   # a skipped step
        assert any(b < a for a, b in zip(scales, scales[1:]))                # backoff
        assert any(b > a for a, b in zip(scales, scales[1:])) or interval > len(seq)   # growth
