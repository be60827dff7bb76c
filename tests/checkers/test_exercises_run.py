"""The exercises and their solutions as a learner runs them — in this process, not in a Jupyter kernel per notebook
(a kernel would import torch, transformers and peft again for each of sixteen notebooks; their cells print plain
text only, no rich output a kernel would render). Executed top to bottom in one namespace, as Run All would.

An exercise, with every answer still to write:
- a cell the learner does not touch runs without an error (nothing in it waits for an answer);
- a stub cell defines its stub and at most raises NotImplementedError;
- each check cell prints exactly what the committed notebook shows (the checker's "not written yet" line);
- each cell tagged uses-solution does wait for an answer: it raises NotImplementedError (or NameError for a name
  that an earlier uses-solution cell would have set).

A solution: every cell runs, and each check cell prints exactly what the committed notebook shows (the checker's
"✓ … all N cases pass"), after the sanitizers nbval applies to the lessons (tests/nbval_sanitize.cfg).

Both: nothing that a kernel would show in red: nothing written to stderr, no warning a kernel shows (any but a
deprecation raised outside the notebook's own code, which Python hides), no log record of level WARNING or above
that reaches the root logger (a kernel's last-resort handler prints those). The solutions are executions of whole notebooks, so they are
marked `lessons` (make test-lowest leaves them out, as it leaves out the lessons); test_build.py holds the exercises
to a fresh build of the solutions."""
import configparser
import contextlib
import io
import json
import logging
import re
import warnings
from pathlib import Path

import pytest

from labkit.checkers.build import RAISES_TAG

ROOT = Path(__file__).resolve().parents[2]
EXERCISES, SOLUTIONS = ROOT / "exercises", ROOT / "solutions"
CHECK = "NBVAL_CHECK_OUTPUT"


def _sanitizers() -> list[tuple[re.Pattern, str]]:
    """The regex → replacement pairs of tests/nbval_sanitize.cfg, as nbval reads them."""
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "tests" / "nbval_sanitize.cfg", encoding="utf-8")
    return [(re.compile(cfg[s]["regex"]), cfg[s]["replace"]) for s in cfg.sections()]


SANITIZE = _sanitizers()


def _clean(text: str) -> str:
    for pattern, replacement in SANITIZE:
        text = pattern.sub(replacement, text)
    return text


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


class _Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.records = []

    def emit(self, record):
        self.records.append(record)


def _shown_by_a_kernel(caught, cell_file: str) -> list[str]:
    """The warnings Python's default filters would show in a kernel: deprecations only when the notebook's code
    itself raises them."""
    return [f"{w.category.__name__}: {w.message}" for w in caught
            if not (issubclass(w.category, (DeprecationWarning, PendingDeprecationWarning))
                    and w.filename != cell_file)]


def _run_cells(path: Path, answered: bool) -> list[str]:
    """Execute the notebook's code cells in one namespace; the kinds of its cells, in order."""
    name = f"{path.parent.name}/{path.name}"
    cells = [c for c in json.loads(path.read_text(encoding="utf-8"))["cells"] if c["cell_type"] == "code"]
    namespace = {"__name__": "__main__"}
    kinds = []
    for n, cell in enumerate(cells):
        kind = _kind(cell)
        kinds.append(kind)
        out, err = io.StringIO(), io.StringIO()
        raised = None
        cell_file = f"{name} cell {n}"
        logs = _Collect()
        logging.getLogger().addHandler(logs)
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), \
                    warnings.catch_warnings(record=True) as caught:
                try:
                    exec(compile("".join(cell["source"]), cell_file, "exec"), namespace)
                except (NotImplementedError, NameError) as e:
                    if answered or (kind != "uses-solution" and not isinstance(e, NotImplementedError)):
                        raise
                    raised = e
        finally:
            logging.getLogger().removeHandler(logs)
        where = f"{name}, code cell {n} ({kind})"
        assert err.getvalue() == "", f"{where} printed on stderr: {err.getvalue()!r}"
        assert _shown_by_a_kernel(caught, cell_file) == [], f"{where} warned: {_shown_by_a_kernel(caught, cell_file)}"
        assert logs.records == [], f"{where} logged: {[r.getMessage()[:200] for r in logs.records]}"
        if kind == "uses-solution" and not answered:
            assert raised is not None, f"{where} is tagged uses-solution but runs without an answer"
        elif kind != "stub":
            assert raised is None, f"{where} raised NotImplementedError: it waits for an answer, tag it"
        if kind == "check":
            assert _clean(out.getvalue()) == _clean(_shown(cell)), \
                f"{where}: the check printed other than the notebook shows"
    return kinds


@pytest.mark.parametrize("name", sorted(p.name for p in EXERCISES.glob("*.ipynb")))
def test_an_unanswered_exercise_runs_as_a_learner_first_sees_it(name, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)                      # a cell that writes files writes them here
    kinds = _run_cells(EXERCISES / name, answered=False)
    assert kinds.count("stub") >= 1 and kinds.count("check") == kinds.count("stub"), name


@pytest.mark.lessons
@pytest.mark.parametrize("name", sorted(p.name for p in SOLUTIONS.glob("*.ipynb")))
def test_a_solution_runs_and_every_check_passes(name, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    kinds = _run_cells(SOLUTIONS / name, answered=True)
    assert kinds.count("check") >= 1, name
    shown = [_shown(c) for c in json.loads((SOLUTIONS / name).read_text(encoding="utf-8"))["cells"]
             if c["cell_type"] == "code" and CHECK in "".join(c["source"])]
    assert all(s.startswith("✓") for s in shown), f"{name}: a committed check output is not a pass: {shown}"
