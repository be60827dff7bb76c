"""What every checker must do, whatever its exercise; each tests/checkers/test_exNN.py runs these on its checkers.

A checker must pass a correct answer with its fixed line, report "not implemented yet" for a stub, survive any
exception from learner code, and fail — with the hint that names the mistake — on plausible wrong answers.
"""
from labkit import checkers as E


def stub(*args, **kwargs):
    """What an exercise cell holds until the learner writes it."""
    raise NotImplementedError("your code here")


def wrong_ids(wrong) -> list[str]:
    """Test ids for a WRONG list: 'check_…-what the learner got wrong'."""
    return [f"{n}-{w}" for n, w, _, _ in wrong]


def passes_a_right_answer_with_its_fixed_line(name, answer, capsys):
    result = getattr(E, name)(answer)
    out = capsys.readouterr().out
    assert result and result.passed and not result.failures
    assert out == E.pass_line(E.TITLES[name], result.cases) + "\n"
    assert result.cases >= 3


def says_not_implemented_for_a_stub(name, stub_answer, capsys):
    result = getattr(E, name)(stub_answer)
    assert not result and result.not_implemented
    assert capsys.readouterr().out == E.not_implemented_line(E.TITLES[name]) + "\n"


def survives_broken_learner_code(name, capsys):
    def broken(*args, **kwargs):
        raise ZeroDivisionError("oops")

    def junk(*args, **kwargs):
        return "junk"

    for answer in (broken, junk):
        result = getattr(E, name)(answer)
        out = capsys.readouterr().out
        assert not result and not result.not_implemented and result.failures
        assert out.startswith(f"✗ {E.TITLES[name]}: ") and "expected:" in out and "got:" in out


def catches_a_plausible_wrong_answer(name, what, answer, hint, capsys):
    result = getattr(E, name)(answer)
    out = capsys.readouterr().out
    assert not result, f"{name} accepted a wrong answer: {what}"
    assert result.failures and out.startswith(f"✗ {E.TITLES[name]}: {len(result.failures)} of {result.cases}")
    assert hint in out, f"the feedback for {what!r} should mention {hint!r}:\n{out}"
