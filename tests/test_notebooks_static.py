"""Static checks of the lesson notebooks (nbval executes them; these read them).

- every lesson exists, is valid nbformat, and opens with an "Open in Colab" badge for its own path, built from the
  one repository URL in labkit/course/links.py;
- the setup cell installs only on Colab, never touches torch, and points at the same repository;
- committed notebooks carry outputs only on the pinned cells, and no machine paths, tokens or stale errors;
- markdown links between lessons lead to files that exist; notebooks/README.md lists every lesson.
"""
import json
import re
import subprocess
from pathlib import Path

import nbformat
import pytest

import labkit
from labkit.course.links import BRANCH, REPO_URL, badge_markdown, colab_url

ROOT = Path(__file__).resolve().parents[1]
NB_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(NB_DIR.glob("*.ipynb"))
REQUIRED = ["00_start_here", "01_where_memory_goes", "02_gradient_checkpointing", "03_batch_and_accumulation",
            "04_mixed_precision", "05_qlora_together", "06_debugging_oom", "07_discussion"]
MACHINE_PATHS = re.compile(r"(/work/|/root/|/home/|/tmp/|/Users/|[A-Z]:\\\\Users)")
TOKENS = re.compile(r"(hf_[A-Za-z0-9]{30,}|ghp_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{30,}|sk-[A-Za-z0-9]{30,})")
IDS = [p.name for p in NOTEBOOKS]
# every committed notebook, lessons, solutions and generated exercises alike
ALL_NOTEBOOKS = NOTEBOOKS + sorted((ROOT / "solutions").glob("*.ipynb")) + sorted((ROOT / "exercises").glob("*.ipynb"))
ALL_IDS = [f"{p.parent.name}/{p.name}" for p in ALL_NOTEBOOKS]


def rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def load(path: Path):
    return nbformat.read(path, as_version=4)


def test_every_lesson_is_there():
    names = [p.stem for p in NOTEBOOKS]
    missing = [n for n in REQUIRED if n not in names]
    assert not missing, f"missing notebooks: {missing}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_valid_notebook_with_python_kernel(path):
    nb = load(path)
    nbformat.validate(nb)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    assert "widgets" not in nb.metadata, "saved widget state: commit the notebook without it"
    ids = [c.get("id") for c in nb.cells]
    assert len(ids) == len(set(ids)), "cell ids must be unique"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_first_cell_is_the_colab_badge_for_this_very_file(path):
    first = load(path).cells[0]
    assert first.cell_type == "markdown"
    assert first.source.startswith(badge_markdown(rel(path))), "badge missing or pointing elsewhere"
    urls = re.findall(r"https://colab\.research\.google\.com/github/[^)\s]+", first.source)
    assert urls == [colab_url(rel(path))]
    owner_repo = REPO_URL.removeprefix("https://github.com/")
    assert urls[0] == f"https://colab.research.google.com/github/{owner_repo}/blob/{BRANCH}/{rel(path)}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_setup_cell_installs_only_on_colab_and_leaves_torch_alone(path, monkeypatch):
    setup = load(path).cells[1]
    assert setup.cell_type == "code" and "google.colab" in setup.source
    assert f'REPO_URL, TAG = "{REPO_URL}", "v{labkit.__version__}"' in setup.source
    assert "torch" not in setup.source.split("import sys", 1)[1]   # what it installs on Colab: tests/test_installs.py

    def refuse(*args, **kwargs):
        raise AssertionError(f"setup cell ran a command outside Colab: {args}")

    monkeypatch.setattr(subprocess, "run", refuse)
    exec(compile(setup.source, str(path), "exec"), {"__name__": "__main__"})   # here (not Colab): does nothing


@pytest.mark.parametrize("path", ALL_NOTEBOOKS, ids=ALL_IDS)
def test_outputs_stripped_except_on_pinned_cells(path):
    """nbval compares a `# NBVAL_CHECK_OUTPUT` cell with its committed output, and never compares a cell committed
    unrun: so pinned cells keep their (deterministic) output, every other cell is committed stripped."""
    for cell in load(path).cells:
        if cell.cell_type != "code":
            continue
        if cell.source.startswith("# NBVAL_CHECK_OUTPUT"):
            assert cell.outputs and cell.execution_count is not None, \
                "a pinned cell needs its expected output committed, or nbval checks nothing"
        else:
            assert cell.outputs == [] and cell.execution_count is None, \
                "commit unpinned cells with outputs stripped (nbval runs them in CI)"


@pytest.mark.parametrize("path", ALL_NOTEBOOKS, ids=ALL_IDS)
def test_no_machine_paths_tokens_or_errors(path):
    text = path.read_text(encoding="utf-8")
    assert not TOKENS.search(text), "a notebook holds something that looks like a token"
    for cell in load(path).cells:
        assert not MACHINE_PATHS.search(cell.source), f"machine path in a cell: {cell.source[:80]!r}"
        for out in cell.get("outputs", []):
            assert out.get("output_type") != "error", "stale error output"
            blob = json.dumps(out)
            assert not MACHINE_PATHS.search(blob), "machine path in an output"
            assert "Traceback" not in blob


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_pins_deterministic_outputs_and_stays_thin(path):
    nb = load(path)
    code = [c.source for c in nb.cells if c.cell_type == "code"]
    assert any(src.startswith("# NBVAL_CHECK_OUTPUT") for src in code), "pin at least one deterministic cell"
    for src in code:
        assert "sys.path" not in src, "notebooks import the installed labkit, never a path hack"
        if src.startswith("# NBVAL_CHECK_OUTPUT"):
            for volatile in ("experiment.run(", "measured", ".click()", "train_with_trainer", "largest_micro_batch",
                             "perf_counter"):
                assert volatile not in src, f"a pinned cell must not print measured, volatile values ({volatile})"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_links_between_lessons_resolve(path):
    for cell in load(path).cells:
        if cell.cell_type != "markdown":
            continue
        for target in re.findall(r"\]\(([^)#\s]+\.ipynb)\)", cell.source):
            if target.startswith("http"):
                continue
            assert (path.parent / target).exists(), f"broken link to {target}"


def test_readme_lists_every_notebook_with_its_badge():
    readme = (NB_DIR / "README.md").read_text(encoding="utf-8")
    for path in NOTEBOOKS:
        assert path.name in readme, f"notebooks/README.md does not mention {path.name}"
        assert colab_url(rel(path)) in readme, f"notebooks/README.md lacks the Colab link of {path.name}"
    assert not MACHINE_PATHS.search(readme)


HIDDEN_VERDICTS = re.compile(r"lessons\.(claim|verdict)\(|delta_text\(")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_comparisons_are_written_out_in_the_cell(path):
    """A lesson compares a figure with a claim in its own code: the numbers, the arithmetic and the comparison
    (`inside = 2.5 <= ratio <= 3.3`), never a helper's sentence that decides out of sight."""
    for cell in load(path).cells:
        if cell.cell_type == "code":
            assert not HIDDEN_VERDICTS.search(cell.source), f"a hidden verdict in {cell.source[:80]!r}"


def test_lesson_06s_deliberate_gpu_oom_runs_out_on_a_gpu_bigger_than_a_t4():
    """Lesson 06's GPU branch asks the lab for sequence 4096 × micro-batch 16 to show a real OOM. The theory puts that
    run's peak above an 80 GB H100's memory but below a 141 GB H200's, so on a GPU bigger than a T4 the cell first
    caps the notebook to a T4's memory (hardware.t4_profile, as lesson 07 does), before the panel is built (the
    panel shows the precision its runs will use); and the lesson's text gives the theory's figure."""
    from labkit import theory
    from labkit.config import RunConfig
    from labkit.engine.hardware import T4_TOTAL_MEMORY
    from labkit.shapes import resolve_shape

    nb = load(NB_DIR / "06_debugging_oom.ipynb")
    cell = next(c.source for c in nb.cells if c.cell_type == "code" and "seq_len=4096, micro_batch=16" in c.source)
    assert 'if env.on_gpu and "T4" not in env.device_name:' in cell
    assert cell.index("t4_profile()") < cell.index("lab(steps=") < cell.index("seq_len=4096")
    cfg = RunConfig(model="llama-3.2-1b", seq_len=4096, micro_batch=16)     # the lessons' GPU model, the lab's rest
    peak = theory.predict_memory(resolve_shape(cfg.model), cfg, "fp16")["peak"]
    assert T4_TOTAL_MEMORY < 80 * 10**9 < peak < 141 * 10**9
    text = "".join(c.source for c in nb.cells if c.cell_type == "markdown").replace("\n", " ")
    assert f"the theory puts this run's peak near {round(peak / 2**30)} GiB" in text
