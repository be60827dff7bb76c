"""What all checkers share: the verdict object, the failure report, the learner-facing namespace, and that every
checker is tried on right and wrong answers in the test module of its exercise (test_ex00.py … test_ex07.py)."""
import importlib
import json
import re
from pathlib import Path

from labkit import checkers as E
from labkit.checkers import _references

REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((REPO / "solutions").glob("*.ipynb")) + sorted((REPO / "exercises").glob("*.ipynb"))
EXERCISE_TESTS = [importlib.import_module(f"test_ex{n:02d}") for n in range(8)]
REFERENCE_ANSWERS = {name for name in vars(_references) if name.startswith("reference_")}


def test_every_checker_has_a_wrong_answer_test():
    assert {n for module in EXERCISE_TESTS for n, *_ in module.WRONG} == set(E.TITLES)


def test_every_checker_is_tried_on_a_right_answer_in_its_exercise_module():
    tried = [name for module in EXERCISE_TESTS for name in module.RIGHT]
    assert sorted(tried) == sorted(E.TITLES)                     # each checker once
    for module in EXERCISE_TESTS:
        exercise = module.__name__.removeprefix("test_")             # test_ex03 tries labkit.checkers.ex03
        checkers = {n for n in vars(importlib.import_module(f"labkit.checkers.{exercise}")) if n.startswith("check_")}
        assert checkers == set(module.RIGHT) == {n for n, *_ in module.WRONG}


def test_failure_report_is_capped(capsys):
    E.check_param_count(lambda shape: 0)
    out = capsys.readouterr().out
    assert out.count("  • ") == E.MAX_SHOWN and "… and 2 more failing case(s)" in out


def test_result_object():
    r = E.CheckResult("x", 3)
    assert r and r.summary() == "✓ x: all 3 cases pass" and "all 3 cases pass" in repr(r)
    assert not E.CheckResult("x", 3, [E.Failure("c", "1", "2")])
    assert not E.CheckResult("x", 3, not_implemented=True)


def _names_notebooks_use() -> set[str]:
    """Every `ex.<name>` in the code cells of solutions/ and exercises/."""
    names = set()
    for path in NOTEBOOKS:
        for cell in json.loads(path.read_text(encoding="utf-8"))["cells"]:
            if cell["cell_type"] == "code":
                names |= set(re.findall(r"\bex\.([A-Za-z_]\w*)", "".join(cell["source"])))
    return names


def test_the_learner_namespace_has_every_name_a_notebook_uses_but_no_reference_answer():
    used = _names_notebooks_use()
    assert set(E.TITLES) <= used
    assert {n for n in used if not hasattr(E, n)} <= REFERENCE_ANSWERS
    assert set(E.__all__) == {n for n in vars(E) if not n.startswith("_") and not isinstance(vars(E)[n], type(E))}
    assert not REFERENCE_ANSWERS & set(dir(E)), "labkit.checkers re-exports a reference answer"
