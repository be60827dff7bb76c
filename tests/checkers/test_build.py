"""The generator of exercises/ from solutions/, and the committed notebooks: stubs, pins, metadata, links, and no
drift between exercises/ and a fresh build."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import labkit
from labkit import checkers as E
from labkit.checkers.build import (BEGIN, CODE_STUB, END, RAISES_TAG, TEXT_STUB, build, dumps, exercise_notebook,
                                   out_of_date, stub_source)
from labkit.checkers.build import main as build_main
from labkit.course import links

REPO = Path(__file__).resolve().parents[2]
SOLUTIONS, EXERCISES = REPO / "solutions", REPO / "exercises"
LESSONS = ("01", "02", "03", "04", "05", "06", "07")


# ---------------------------------------------------------------------------------------------------------------
# The generator
# ---------------------------------------------------------------------------------------------------------------
def test_stub_keeps_indentation_and_the_code_around_the_block():
    src = f"def f(x):\n    y = x + 1\n    {BEGIN}\n    return y * 2\n    {END}\n\nprint('after')"
    text, blocks, top = stub_source(src, "code")
    assert blocks == 1 and not top
    assert text == ("def f(x):\n    y = x + 1\n" + "".join(f"    {s}\n" for s in CODE_STUB) + "\nprint('after')")
    compile(text, "<stub>", "exec")


def test_stub_handles_several_blocks_and_top_level_ones():
    src = f"{BEGIN}\nx = 1\n{END}\nclass A:\n    def m(self):\n        {BEGIN}\n        return 1\n        {END}"
    text, blocks, top = stub_source(src, "code")
    assert blocks == 2 and top and text.count("raise NotImplementedError") == 2
    assert "        raise NotImplementedError" in text and "x = 1" not in text and "return 1" not in text
    compile(text, "<stub>", "exec")


def test_markdown_answer_is_replaced_by_a_prompt():
    text, blocks, top = stub_source(f"**Q.** Why?\n\n{BEGIN}\nBecause.\n{END}", "markdown")
    assert blocks == 1 and not top and text == "**Q.** Why?\n\n" + TEXT_STUB[0]


@pytest.mark.parametrize("src", [f"{BEGIN}\nx = 1", f"x = 1\n{END}", f"{BEGIN}\n{BEGIN}\n{END}\n{END}"])
def test_unbalanced_delimiters_are_refused(src):
    with pytest.raises(ValueError):
        stub_source(src)


def _nb(*cells):
    return {"cells": list(cells), "metadata": {"kernelspec": {"name": "python3"}, "widgets": {"state": {}}},
            "nbformat": 4, "nbformat_minor": 5}


def _code(src, tags=None, outputs=None):
    return {"cell_type": "code", "id": "c", "execution_count": 3, "source": src,
            "metadata": {"tags": tags} if tags else {},
            "outputs": outputs or [{"output_type": "stream", "name": "stdout", "text": "hi\n"}]}


def test_exercise_notebook_clears_tags_and_pins():
    nb = _nb(_code(f"def f():\n    {BEGIN}\n    return 1\n    {END}"),
             _code("# NBVAL_CHECK_OUTPUT\nex.check_accumulation(f)"),
             _code("print(f())", tags=["uses-solution"]),
             _code("print('plain')"))
    out = exercise_notebook(nb, "solutions/x.ipynb")
    stub, check, demo, plain = out["cells"]
    assert nb["cells"][0]["outputs"] and "widgets" in nb["metadata"]          # the input is left alone
    assert stub["metadata"]["tags"] == [RAISES_TAG] and stub["outputs"] == [] and stub["execution_count"] is None
    assert check["execution_count"] == 2 and check["outputs"] == [{
        "name": "stdout", "output_type": "stream",
        "text": [E.not_implemented_line(E.TITLES["check_accumulation"]) + "\n"]}]
    assert demo["metadata"]["tags"] == ["uses-solution", RAISES_TAG] and demo["outputs"] == []
    assert "tags" not in plain["metadata"] and plain["outputs"] == [] and plain["execution_count"] is None
    assert "widgets" not in out["metadata"] and out["metadata"]["labkit_generated_from"] == "solutions/x.ipynb"


def test_check_cell_with_an_unknown_checker_is_refused():
    with pytest.raises(ValueError, match="check_nothing"):
        exercise_notebook(_nb(_code("# NBVAL_CHECK_OUTPUT\nex.check_nothing(f)")))


def test_build_is_deterministic_and_removes_only_stale_generated_notebooks(tmp_path):
    src, dst = tmp_path / "solutions", tmp_path / "exercises"
    src.mkdir()
    (src / "ex_a.ipynb").write_text(json.dumps(_nb(_code(f"{BEGIN}\nx = 1\n{END}"))), encoding="utf-8")
    (src / "ex_b.ipynb").write_text(json.dumps(_nb(_code("y = 2"))), encoding="utf-8")
    build(src, dst)
    first = {p.name: p.read_bytes() for p in dst.iterdir()}
    build(src, dst)
    assert {p.name: p.read_bytes() for p in dst.iterdir()} == first
    assert all(b.endswith(b"\n") for b in first.values())
    assert out_of_date(src, dst) == []
    (dst / "mine.ipynb").write_text(json.dumps(_nb()), encoding="utf-8")     # not generated: must survive
    (src / "ex_b.ipynb").unlink()
    assert out_of_date(src, dst) == [str(dst / "ex_b.ipynb")]
    build(src, dst)
    assert sorted(p.name for p in dst.iterdir()) == ["ex_a.ipynb", "mine.ipynb"]


def test_cli_check_and_bad_input(tmp_path, monkeypatch, capsys):
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    p = subprocess.run([sys.executable, "-m", "labkit.checkers.build", "missing", "out"], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=120)     # the module as a command, in a fresh process
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "does not exist" in p.stderr
    # the rest through the same main() in this process (an interpreter each would add ~2 s and no check)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sol").mkdir()
    (tmp_path / "sol" / "e.ipynb").write_text(json.dumps(_nb(_code("x = 1"))), encoding="utf-8")
    assert build_main(["sol", "ex", "--check"]) == 1 and "out of date" in capsys.readouterr().err
    assert build_main(["sol", "ex"]) == 0 and build_main(["sol", "ex", "--check"]) == 0


# ---------------------------------------------------------------------------------------------------------------
# The committed notebooks
# ---------------------------------------------------------------------------------------------------------------
def test_committed_exercises_match_a_fresh_build(tmp_path):
    build(SOLUTIONS, tmp_path)
    fresh = {p.name: p.read_bytes() for p in tmp_path.glob("*.ipynb")}
    committed = {p.name: p.read_bytes() for p in EXERCISES.glob("*.ipynb")}
    assert sorted(committed) == sorted(fresh), "run: python -m labkit.checkers.build solutions exercises"
    stale = [name for name in fresh if fresh[name] != committed[name]]
    assert not stale, f"{stale} out of date — run: python -m labkit.checkers.build solutions exercises"


def _notebooks():
    return sorted(SOLUTIONS.glob("*.ipynb"))


def _cells(path):
    return json.loads(path.read_text(encoding="utf-8"))["cells"]


def _text(cell):
    return "".join(cell["source"])


def test_solutions_are_saved_as_jupyter_saves_them():
    for path in _notebooks():
        text = path.read_text(encoding="utf-8")
        assert dumps(json.loads(text)) == text, f"{path.name}: save it with Jupyter or dumps()"


def test_every_lesson_has_exercises_and_there_are_at_least_eight_checks():
    names = [p.name for p in _notebooks()]
    for lesson in LESSONS:
        assert any(n.startswith(f"ex{lesson}_") for n in names), f"no exercise notebook for lesson {lesson}"
    calls = [name for p in _notebooks() for c in _cells(p) if "# NBVAL_CHECK_OUTPUT" in _text(c)
             for name in re.findall(r"\b(check_\w+)\(", _text(c))]
    assert len(calls) >= 8 and set(calls) == set(E.TITLES) and len(calls) == len(set(calls))


def test_solution_check_cells_pin_the_pass_line():
    for path in _notebooks():
        for cell in _cells(path):
            if cell["cell_type"] != "code" or "# NBVAL_CHECK_OUTPUT" not in _text(cell):
                continue
            (name,) = re.findall(r"\b(check_\w+)\(", _text(cell))
            outputs = cell["outputs"]
            assert cell["execution_count"] is not None and len(outputs) == 1, f"{path.name}: run {name}'s cell"
            assert re.fullmatch(rf"✓ {re.escape(E.TITLES[name])}: all \d+ cases pass\n", "".join(outputs[0]["text"]))


def test_solution_cells_carry_nbgrader_metadata_and_exercises_stub_them():
    for path in _notebooks():
        solution_cells = [c for c in _cells(path) if BEGIN in _text(c)]
        assert solution_cells, f"{path.name} has no solution block"
        for cell in solution_cells:
            nbg = cell["metadata"].get("nbgrader", {})
            assert nbg.get("solution") is True and nbg.get("grade_id") == cell["id"], f"{path.name} {cell['id']}"
        ex_cells = {c["id"]: c for c in _cells(EXERCISES / path.name)}
        for cell in solution_cells:
            stub = ex_cells[cell["id"]]
            assert BEGIN not in _text(stub) and END not in _text(stub)
            if cell["cell_type"] == "code":
                assert "raise NotImplementedError" in _text(stub) and RAISES_TAG in stub["metadata"]["tags"]


def test_setup_cell_and_badge_point_at_this_repository():
    for path in _notebooks():
        cells = _cells(path)
        setup = _text(cells[1])
        assert f'REPO_URL, TAG = "{links.REPO_URL}", "v{labkit.__version__}"' in setup, \
            f"{path.name}: setup cell installs another repository or release"
        assert "constraints/colab.txt" in setup, f"{path.name}: setup cell installs without the tested pins"
        assert links.badge_markdown(f"exercises/{path.name}") in _text(cells[0])


def test_each_exercise_links_to_its_lesson():
    for path in _notebooks():
        links_found = re.findall(r"\]\(\.\./(notebooks/[^)]+\.ipynb)\)", _text(_cells(path)[0]))
        assert links_found, f"{path.name}: no link to its lesson"
        for target in links_found:
            assert (REPO / target).is_file(), f"{path.name} links to {target}, which does not exist"
            assert Path(target).name[:2] == path.name[2:4], f"{path.name} links to another lesson: {target}"


@pytest.mark.parametrize("where", ["same", "inside"])
def test_a_destination_that_is_or_lies_in_the_source_is_refused_and_the_solutions_survive(tmp_path, where):
    src = tmp_path / "solutions"
    src.mkdir()
    answer = json.dumps(_nb(_code(f"def f():\n    {BEGIN}\n    return 42\n    {END}")))
    (src / "ex_a.ipynb").write_text(answer, encoding="utf-8")
    dst = src if where == "same" else src / "ex"
    with pytest.raises(ValueError, match="source"):
        build(src, dst)
    assert (src / "ex_a.ipynb").read_text(encoding="utf-8") == answer and not (src / "ex").exists()


def test_a_notebook_the_kit_did_not_generate_is_never_overwritten(tmp_path):
    src, dst = tmp_path / "solutions", tmp_path / "exercises"
    src.mkdir()
    dst.mkdir()
    (src / "ex_a.ipynb").write_text(json.dumps(_nb(_code(f"{BEGIN}\nx = 1\n{END}"))), encoding="utf-8")
    mine = json.dumps(_nb(_code("x = 'my own work'")))
    (dst / "ex_a.ipynb").write_text(mine, encoding="utf-8")
    (dst / "ex_b.ipynb").write_text("not json", encoding="utf-8")
    with pytest.raises(ValueError, match="ex_a.ipynb.*did not generate"):
        build(src, dst)
    assert (dst / "ex_a.ipynb").read_text(encoding="utf-8") == mine
    (dst / "ex_a.ipynb").unlink()
    build(src, dst)                              # a generated one is rewritten in place, the foreign one stays
    build(src, dst)
    assert (dst / "ex_b.ipynb").read_text(encoding="utf-8") == "not json"


def test_cli_refuses_to_write_exercises_over_the_solutions(tmp_path):
    src = tmp_path / "sol"
    src.mkdir()
    answer = json.dumps(_nb(_code(f"{BEGIN}\nx = 1\n{END}")))
    (src / "e.ipynb").write_text(answer, encoding="utf-8")
    p = subprocess.run([sys.executable, "-m", "labkit", "exercises", "sol", "sol"], cwd=tmp_path, capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 2 and p.stderr.startswith("labkit: error:") and p.stderr.count("\n") == 1
    assert (src / "e.ipynb").read_text(encoding="utf-8") == answer


def test_a_source_notebook_nested_too_deep_is_one_line(tmp_path):
    src = tmp_path / "solutions"
    src.mkdir()
    (src / "ex_a.ipynb").write_text("[" * 100_000, encoding="utf-8")
    with pytest.raises(ValueError, match="cannot read .*RecursionError"):
        build(src, tmp_path / "exercises")
