"""The walls of the package, read from the source (no import is executed).

Ground rule 1: measurement never imports the theory and the theory never imports measurement, so a measured figure
cannot come from a formula, nor a prediction from a measurement. Beyond that, every import goes downward:

    layer 0  config, shapes, units, record, goals    what everything shares
    layer 1  theory | engine/ | report/               three rooms that never import each other
    layer 2  experiment, search, sweeps               runs with their theory; grids; the largest micro-batch
    layer 3  course/, checkers/, cli, flags, fresh    what people use: lessons, the lab, exercises, the shell

and no learner notebook imports the checkers' reference answers.
"""
import ast
import json
import pathlib
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
LABKIT = ROOT / "labkit"
LAYERS = [
    {"config", "shapes", "units", "record", "goals"},
    {"theory", "engine", "report"},
    {"experiment", "search", "sweeps"},
    {"course", "checkers", "cli", "flags", "fresh", "__main__"},
]
WALLED = {"theory", "engine", "report"}               # layer 1: none of these imports another


def room(module: str) -> str:
    """'engine.runner' → 'engine'; 'theory' → 'theory'."""
    return module.split(".")[0]


def layer(module: str) -> int:
    return next(i for i, names in enumerate(LAYERS) if room(module) in names)


def modules() -> list[str]:
    """Every module of the package as a dotted name below labkit ('engine.runner', 'checkers', …)."""
    out = []
    for path in sorted(LABKIT.rglob("*.py")):
        parts = path.relative_to(LABKIT).with_suffix("").parts
        if parts == ("__init__",):
            continue
        out.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return out


def source(module: str) -> pathlib.Path:
    path = LABKIT.joinpath(*module.split("."))
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def labkit_imports(module: str) -> set[str]:
    """Dotted names below labkit that `module` imports, anywhere in the file (lazy imports inside functions too)."""
    tree = ast.parse(source(module).read_text(encoding="utf-8"))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found |= {f"{node.module}.{a.name}" for a in node.names}
    names = set()
    for n in found:
        if n.startswith("labkit."):
            parts = n.split(".")[1:]
            while parts and not (LABKIT.joinpath(*parts).with_suffix(".py").exists()
                                 or LABKIT.joinpath(*parts).is_dir()):
                parts.pop()                                # `from labkit.engine.runner import x` → engine.runner
            if parts:
                names.add(".".join(parts))
    return names


@pytest.mark.parametrize("module", modules())
def test_every_module_has_a_layer(module):
    layer(module)


@pytest.mark.parametrize("module", modules())
def test_imports_only_go_down_or_stay_in_their_room(module):
    for dep in labkit_imports(module):
        if room(dep) == room(module):
            continue
        assert layer(dep) < layer(module) or (layer(dep) == layer(module) and layer(module) != 1), \
            f"labkit.{module} imports labkit.{dep}: layer {layer(module)} → {layer(dep)}"


@pytest.mark.parametrize("module", [m for m in modules() if room(m) in WALLED])
def test_theory_engine_and_report_never_import_each_other(module):
    crossing = {room(d) for d in labkit_imports(module)} & (WALLED - {room(module)})
    assert not crossing, f"labkit.{module} imports {crossing}"


def test_measurement_and_theory_are_apart_in_both_directions():
    engine = [m for m in modules() if room(m) == "engine"]
    assert "engine.measure" in engine and "engine.runner" in engine
    assert all("theory" not in {room(d) for d in labkit_imports(m)} for m in engine)
    assert "engine" not in {room(d) for d in labkit_imports("theory")}


NOTEBOOKS = sorted(ROOT.glob("notebooks/*.ipynb")) + sorted(ROOT.glob("exercises/*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_no_learner_notebook_imports_the_reference_answers(path):
    code = "\n".join("".join(c["source"]) for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code")
    assert "_references" not in code


LEARNER_NOTEBOOKS = NOTEBOOKS + sorted(ROOT.glob("solutions/*.ipynb"))


@pytest.mark.parametrize("path", LEARNER_NOTEBOOKS, ids=lambda p: p.name)
def test_lessons_reach_the_engine_only_through_the_course_helpers(path):
    """A lesson uses the public API, `labkit.course.lessons`, and the engine parts it opens up through
    `labkit.course.inside` (one documented place), never the engine's modules themselves."""
    code = "\n".join("".join(c["source"]) for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code")
    assert not [line for line in code.splitlines() if "labkit.engine" in line and "import" in line]


def test_the_checker_sees_a_violation(tmp_path, monkeypatch):
    (tmp_path / "engine").mkdir()
    (tmp_path / "theory.py").write_text("")
    (tmp_path / "engine" / "runner.py").write_text("def f():\n    from labkit import theory\n")
    monkeypatch.setattr(sys.modules[__name__], "LABKIT", tmp_path)
    assert labkit_imports("engine.runner") == {"theory"}
    with pytest.raises(AssertionError):
        test_theory_engine_and_report_never_import_each_other("engine.runner")


def private_names_taken(module: str) -> list[str]:
    """`_name`s that `module` imports from another labkit module: a private name is its own module's business."""
    tree = ast.parse(source(module).read_text(encoding="utf-8"))
    return [f"{node.module}.{a.name}" for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("labkit")
            for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]


@pytest.mark.parametrize("module", modules())
def test_no_module_takes_another_modules_private_names(module):
    assert private_names_taken(module) == [], "make it public where it is defined, or keep it there"


def test_the_private_name_check_sees_one(tmp_path, monkeypatch):
    (tmp_path / "theory").mkdir()
    (tmp_path / "theory" / "peak.py").write_text("from labkit.theory.activations import _layer_saved, ok\n")
    monkeypatch.setattr(sys.modules[__name__], "LABKIT", tmp_path)
    assert private_names_taken("theory.peak") == ["labkit.theory.activations._layer_saved"]


def import_cycles() -> list[list[str]]:
    """Groups of modules that import one another around a loop (lazy imports inside functions count too), each
    sorted; [] when the imports form no loop. A loop inside a room is as much a knot as one across rooms: neither
    module can be read, changed or tested without the other."""
    names = set(modules())
    graph = {m: sorted(d for d in labkit_imports(m) if d in names and d != m) for m in names}
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(m):                                   # Tarjan's strongly connected components
        index[m] = low[m] = len(index)
        stack.append(m)
        on_stack.add(m)
        for d in graph[m]:
            if d not in index:
                visit(d)
                low[m] = min(low[m], low[d])
            elif d in on_stack:
                low[m] = min(low[m], index[d])
        if low[m] == index[m]:
            group = []
            while not group or group[-1] != m:
                group.append(stack.pop())
                on_stack.discard(group[-1])
            if len(group) > 1:
                cycles.append(sorted(group))

    for m in sorted(names):
        if m not in index:
            visit(m)
    return cycles


def test_no_import_cycles_in_the_package():
    assert import_cycles() == []


def test_the_cycle_check_sees_one_inside_a_room(tmp_path, monkeypatch):
    (tmp_path / "report").mkdir()
    (tmp_path / "report" / "text.py").write_text("def f():\n    from labkit.report.timing import g\n")
    (tmp_path / "report" / "timing.py").write_text("from labkit.report.text import f\n")
    (tmp_path / "report" / "html.py").write_text("from labkit.report.text import f\n")
    monkeypatch.setattr(sys.modules[__name__], "LABKIT", tmp_path)
    assert import_cycles() == [["report.text", "report.timing"]]
