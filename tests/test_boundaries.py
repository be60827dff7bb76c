"""Ground rule 1: measurement never imports the theory and the theory never imports measurement, so a measured
figure cannot come from a formula, nor a prediction from a measurement."""
import ast
import pathlib
import sys

import pytest

LABKIT = pathlib.Path(__file__).resolve().parents[1] / "labkit"
MEASURING = ["measure", "runner", "batch_search", "trainer", "models"]
PREDICTING = ["theory"]


def labkit_imports(module: str) -> set[str]:
    tree = ast.parse((LABKIT / f"{module}.py").read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
    return {n.split(".", 1)[1] for n in found if n.startswith("labkit.")}


def reachable(module: str) -> set[str]:
    seen, todo = set(), [module]
    while todo:
        m = todo.pop()
        for dep in labkit_imports(m):
            top = dep.split(".")[0]
            if (LABKIT / f"{top}.py").exists() and top not in seen:
                seen.add(top)
                todo.append(top)
    return seen


@pytest.mark.parametrize("module", MEASURING)
def test_measurement_never_reaches_the_theory(module):
    assert "theory" not in reachable(module)


@pytest.mark.parametrize("module", PREDICTING)
def test_theory_never_reaches_measurement(module):
    assert not reachable(module) & {"measure", "runner", "batch_search", "trainer", "experiment"}


def test_the_checker_sees_a_violation(tmp_path, monkeypatch):
    (tmp_path / "fake.py").write_text("from labkit import theory\n")
    monkeypatch.setattr(sys.modules[__name__], "LABKIT", tmp_path)
    assert "theory" in labkit_imports("fake")
