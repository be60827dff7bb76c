"""The checker engine: run a checker's cases against learner code, match wrong answers to hints, print the verdict.

A checker is a list of cases, each a zero-argument callable that returns None (pass) or a `Failure`. `run_cases`
runs them and prints either one fixed line,

    ✓ effective batch: all 8 cases pass

or, for each failing case (the first MAX_SHOWN in full), what was expected, what came back and a hint. It never
raises on a wrong answer: it returns a `CheckResult`, truthy when every case passed. Learner code that raises
`NotImplementedError` (the stub in `exercises/`) ends the whole check with "not implemented yet" instead.

`number_case` and `dict_case` build the two common kinds of case: one number, or a dict of byte counts.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field

import torch

from labkit.units import fmt_bytes_exact

MAX_SHOWN = 3                             # failing cases printed in full; the rest are counted

# Every checker and the name it prints; labkit.checkers.build reads this to pin the "not implemented" line.
TITLES = {
    "check_param_count": "parameter count",
    "check_weights_gib": "weights in GiB",
    "check_lora_params": "LoRA parameters",
    "check_adapter_state": "adapter state bytes",
    "check_logits_bytes": "logits bytes",
    "check_checkpointed_activations": "checkpointed activations",
    "check_best_segments": "checkpoint segments",
    "check_accumulation": "effective batch",
    "check_grad_accumulation": "gradient accumulation",
    "check_precision": "precision choice",
    "check_loss_scaler": "loss scaling",
    "check_qlora_budget": "QLoRA budget",
    "check_qlora_kwargs": "QLoRA recipe",
    "check_largest_micro_batch": "largest micro-batch search",
    "check_axolotl_rules": "Axolotl rules",
    "check_fit_on_t4": "fit on a T4",
    "check_training_hours": "training time",
}


# ---------------------------------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class Failure:
    case: str
    expected: str
    got: str
    hint: str = ""


@dataclass
class CheckResult:
    """What a checker found. Truthy when every case passed."""
    title: str
    cases: int
    failures: list[Failure] = field(default_factory=list)
    not_implemented: bool = False

    @property
    def passed(self) -> bool:
        return not self.not_implemented and not self.failures

    def __bool__(self) -> bool:
        return self.passed

    def summary(self) -> str:
        if self.not_implemented:
            return not_implemented_line(self.title)
        if self.passed:
            return pass_line(self.title, self.cases)
        return f"✗ {self.title}: {len(self.failures)} of {self.cases} cases fail"

    def __repr__(self) -> str:
        return f"CheckResult({self.summary()!r})"

    def _ipython_display_(self):
        """The checker has printed its report already; a bare `check_…(…)` at the end of a cell shows nothing
        more."""


def pass_line(title: str, cases: int) -> str:
    return f"✓ {title}: all {cases} cases pass"


def not_implemented_line(title: str) -> str:
    return f"… {title}: not implemented yet — fill in the cell above, run it, then run this check again"


# ---------------------------------------------------------------------------------------------------------------
# Calling learner code and running the cases
# ---------------------------------------------------------------------------------------------------------------
class _NotImplemented(Exception):
    pass


def call_learner(fn, *args, **kwargs):
    """Call learner code: ("ok", value) or ("raised", exception). NotImplementedError ends the whole check."""
    try:
        return "ok", fn(*args, **kwargs)
    except NotImplementedError:
        raise _NotImplemented from None
    except Exception as e:  # noqa: BLE001 — a learner's bug is a failed case, never a crash
        return "raised", e


def raised_text(e: BaseException) -> str:
    """'raised ValueError: <first line of the message, at most 160 characters>'."""
    text = str(e).strip().splitlines()
    return f"raised {type(e).__name__}" + (f": {text[0][:160]}" if text else "")


def run_cases(name: str, cases) -> CheckResult:
    """Run checker `name`'s `cases` (zero-argument callables, each returning None or a Failure), print the
    verdict and return it."""
    title = TITLES[name]
    failures = []
    try:
        for case in cases:
            try:
                outcome = case()
            except _NotImplemented:
                raise
            except Exception as e:  # noqa: BLE001 — a checker bug must not look like a learner's
                outcome = Failure("(checker)", "the case to run", raised_text(e),
                                  "this looks like a bug in the checker itself; please report it")
            if outcome is not None:
                failures.append(outcome)
    except _NotImplemented:
        result = CheckResult(title, len(cases), not_implemented=True)
        print(result.summary())
        return result
    result = CheckResult(title, len(cases), failures)
    print(result.summary())
    for f in failures[:MAX_SHOWN]:
        print(f"  • {f.case}")
        print(f"      expected: {f.expected}")
        print(f"      got:      {f.got}")
        if f.hint:
            print(f"      hint:     {f.hint}")
    if len(failures) > MAX_SHOWN:
        print(f"  … and {len(failures) - MAX_SHOWN} more failing case(s)")
    return result


# ---------------------------------------------------------------------------------------------------------------
# Numbers a learner hands back
# ---------------------------------------------------------------------------------------------------------------
def is_number(x) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


def as_number(x):
    """Learners may hand back a 0-d tensor or a numpy scalar; take its value. None if it is no number."""
    if isinstance(x, torch.Tensor) and x.numel() == 1:
        x = x.item()
    if hasattr(x, "item") and not isinstance(x, numbers.Real):
        try:
            x = x.item()
        except Exception:  # noqa: BLE001
            return None
    return x if is_number(x) else None


def is_close(got, expected, rel: float = 1e-9, abs_tol: float = 0.0) -> bool:
    return math.isclose(got, expected, rel_tol=rel, abs_tol=abs_tol)


def bytes_text(n) -> str:
    """labkit.units.fmt_bytes_exact ('1,707,012 B (0.002 GiB)'), also for a numpy scalar a learner handed back
    (np.prod gives np.int64): it is shown as the Python number it holds."""
    if is_number(n) and hasattr(n, "item"):
        n = n.item()
    return fmt_bytes_exact(n)


def matching_hint(got, wrong: dict, rel: float = 1e-6):
    """Hint matching: the first hint of `wrong` ({hint: a likely wrong answer, or None where it does not apply})
    whose wrong answer `got` equals within `rel`; None if `got` matches none of them."""
    for hint, value in wrong.items():
        if value is not None and is_number(got) and is_close(got, value, rel):
            return hint
    return None


# ---------------------------------------------------------------------------------------------------------------
# The two common kinds of case
# ---------------------------------------------------------------------------------------------------------------
def number_case(label: str, fn, args: tuple, expected, rel: float, wrong: dict, fmt=repr, default_hint: str = ""):
    """A case whose answer is one number: compare within `rel`; name the mistake when `got` matches a known
    wrong answer (`wrong`: {hint: wrong value})."""
    def case():
        status, got = call_learner(fn, *args)
        if status == "raised":
            return Failure(label, fmt(expected), raised_text(got), default_hint)
        value = as_number(got)
        if value is None:
            return Failure(label, fmt(expected), f"{got!r} (not a number)", "return a number (int or float)")
        if is_close(value, expected, rel):
            return None
        return Failure(label, fmt(expected), fmt(value), matching_hint(value, wrong) or default_hint)
    return case


def dict_case(label: str, fn, args: tuple, expected: dict, rel: dict, hint_for):
    """A case whose answer is a dict of byte counts: every key of `expected` must be there and within rel[key];
    `hint_for(key, got)` explains a value that is not."""
    def case():
        status, got = call_learner(fn, *args)
        exp_text = ", ".join(f"{k}={bytes_text(v)}" for k, v in expected.items())
        if status == "raised":
            return Failure(label, exp_text, raised_text(got))
        if not isinstance(got, dict):
            return Failure(label, exp_text, f"{type(got).__name__} {got!r}"[:200],
                           f"return a dict with the keys {', '.join(expected)}")
        missing = [k for k in expected if k not in got]
        if missing:
            return Failure(label, exp_text, f"a dict without {', '.join(map(repr, missing))}",
                           f"return a dict with the keys {', '.join(expected)}")
        for k, v in expected.items():
            value = as_number(got[k])
            if value is None:
                return Failure(f"{label} [{k!r}]", bytes_text(v), repr(got[k]), "each value is a number of bytes")
            if not is_close(value, v, rel[k], abs_tol=0.5):
                return Failure(f"{label} [{k!r}]", f"{bytes_text(v)} (± {rel[k]:.0%})", bytes_text(value),
                               hint_for(k, value))
        return None
    return case
