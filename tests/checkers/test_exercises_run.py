"""The exercise notebooks as a learner first runs them, with every answer still to write — in this process, not in
a second Jupyter kernel per notebook (nbval executes solutions/, whose cells the exercises share; test_build.py
holds the exercises to a fresh build of them). Executed top to bottom in one namespace, as Run All would:

- a cell the learner does not touch runs without an error (nothing in it waits for an answer);
- a stub cell defines its stub and at most raises NotImplementedError;
- each check cell prints exactly what the committed notebook shows (the checker's "not written yet" line);
- each cell tagged uses-solution does wait for an answer: it raises NotImplementedError (or NameError for a name
  that an earlier uses-solution cell would have set);
- nothing reaches stderr (red in a notebook)."""
import contextlib
import io
import json
from pathlib import Path

import pytest

from labkit.checkers.build import RAISES_TAG

EXERCISES = Path(__file__).resolve().parents[2] / "exercises"
CHECK = "NBVAL_CHECK_OUTPUT"


def _kind(cell) -> str:
    tags = cell["metadata"].get("tags", [])
    source = "".join(cell["source"])
    if "uses-solution" in tags:
        return "uses-solution"
    if RAISES_TAG in tags:
        return "stub"
    return "check" if CHECK in source else "plain"


def _shown(cell) -> str:
    return "".join("".join(o.get("text", "")) for o in cell["outputs"] if o.get("output_type") == "stream")


@pytest.mark.parametrize("name", sorted(p.name for p in EXERCISES.glob("*.ipynb")))
def test_an_unanswered_exercise_runs_as_a_learner_first_sees_it(name, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)                      # a cell that writes files writes them here
    cells = [c for c in json.loads((EXERCISES / name).read_text(encoding="utf-8"))["cells"]
             if c["cell_type"] == "code"]
    namespace = {"__name__": "__main__"}
    kinds = []
    for n, cell in enumerate(cells):
        kind = _kind(cell)
        kinds.append(kind)
        out, err = io.StringIO(), io.StringIO()
        raised = None
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                exec(compile("".join(cell["source"]), f"{name} cell {n}", "exec"), namespace)
            except (NotImplementedError, NameError) as e:
                if kind != "uses-solution" and not isinstance(e, NotImplementedError):
                    raise
                raised = e
        where = f"{name}, code cell {n} ({kind})"
        assert err.getvalue() == "", f"{where} printed on stderr: {err.getvalue()!r}"
        if kind == "uses-solution":
            assert raised is not None, f"{where} is tagged uses-solution but runs without an answer"
        elif kind != "stub":
            assert raised is None, f"{where} raised NotImplementedError: it waits for an answer, tag it"
        if kind == "check":
            assert out.getvalue() == _shown(cell), f"{where}: the check printed other than the notebook shows"
    assert kinds.count("stub") >= 1 and kinds.count("check") == kinds.count("stub"), name
