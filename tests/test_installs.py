"""The install story holds together, read from the files (nothing is installed here):

- pyproject.toml gives every dependency a lower bound, so `make test-lowest` (uv's lowest-direct resolution)
  tests versions someone could really get, and `torch` stays a range;
- constraints/colab.txt pins exact versions, never torch, and every pin lies inside pyproject.toml's ranges;
- constraints/newest.txt (the lock `make test` and CI install from) pins every requirement but torch, exactly,
  inside pyproject.toml's ranges, at Colab's versions where colab.txt pins the same package;
- every notebook's Colab setup cell installs labkit at the release tag v<labkit.__version__> with that constraints
  file read at the same tag, with its dependencies resolved (no --no-deps) and no torch;
- README shows that same command; `.ci/run` runs both ends; environment.yml names no range of its own.
"""
import re
import subprocess
import sys
import types
from pathlib import Path

import nbformat
import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

import labkit
from labkit.course.links import REPO_URL

try:
    import tomllib
except ModuleNotFoundError:                      # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]
CONSTRAINTS = ROOT / "constraints" / "colab.txt"
LOCK = ROOT / "constraints" / "newest.txt"
TAG = f"v{labkit.__version__}"
OWNER_REPO = REPO_URL.removeprefix("https://github.com/")
CONSTRAINTS_URL = f"https://raw.githubusercontent.com/{OWNER_REPO}/{TAG}/constraints/colab.txt"
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb")) + sorted((ROOT / "solutions").glob("*.ipynb")) \
    + sorted((ROOT / "exercises").glob("*.ipynb"))
NOTEBOOK_IDS = [f"{p.parent.name}/{p.name}" for p in NOTEBOOKS]
# torch and the packages built with it or for it: pip must never be told to replace Colab's CUDA torch
TORCH_FAMILY = re.compile(r"^(torch|torchvision|torchaudio|triton|nvidia-.*)$")


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]


def requirements() -> list[Requirement]:
    """Every requirement pyproject.toml lists, the extras' too, less the extras that name labkit itself."""
    project = pyproject()
    listed = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        listed += [r for r in extra if Requirement(r).name != project["name"]]
    return [Requirement(r) for r in listed]


def pins(path: Path = CONSTRAINTS) -> dict[str, Version]:
    """A constraints file as {canonical name: pinned version}; every line that is not a comment is `name==X`."""
    found: dict[str, Version] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        req = Requirement(line)
        (spec,) = req.specifier
        assert spec.operator == "==" and "*" not in spec.version, f"line {number}: {line!r} is not an exact pin"
        name = canonicalize_name(req.name)
        assert name not in found, f"line {number}: {req.name} pinned twice"
        found[name] = Version(spec.version)
    return found


def test_every_dependency_has_a_lower_bound():
    """uv's lowest-direct resolution takes the lowest version a range admits: without a bound that is an ancient
    release the kit was never meant to run with, and the low-end job would test nothing real."""
    unbounded = [str(r) for r in requirements()
                 if not any(s.operator in (">=", ">", "==", "~=", "===") for s in r.specifier)]
    assert not unbounded, f"give these a lower bound in pyproject.toml: {unbounded}"


def test_torch_stays_a_range():
    (torch,) = [r for r in requirements() if r.name == "torch"]
    assert all(s.operator in (">=", ">") for s in torch.specifier), \
        f"torch must stay a lower bound only (Colab's own CUDA build must satisfy it), got {torch}"


def test_constraints_pin_the_training_libraries_and_never_torch():
    pinned = pins()
    assert {"peft", "bitsandbytes", "transformers", "accelerate"} <= set(pinned)
    assert not [n for n in pinned if TORCH_FAMILY.match(n)], "the Colab constraints must not name torch"


def test_constraints_lie_inside_pyprojects_ranges():
    pinned = pins()
    named = [r for r in requirements() if canonicalize_name(r.name) in pinned]
    assert len(named) >= 4
    outside = [f"{r.name}=={pinned[canonicalize_name(r.name)]} vs {r}" for r in named
               if not r.specifier.contains(pinned[canonicalize_name(r.name)], prereleases=True)]
    assert not outside, f"constraints/colab.txt pins versions pyproject.toml refuses: {outside}"


def test_the_lock_pins_every_requirement_inside_its_range_and_agrees_with_colab():
    locked, colab = pins(LOCK), pins()
    assert not [n for n in locked if TORCH_FAMILY.match(n)], "the lock must leave torch to TORCH_SPEC"
    needed = {canonicalize_name(r.name) for r in requirements()} - {"torch"}
    assert not needed - set(locked), f"the lock misses {sorted(needed - set(locked))}: run `make lock`"
    outside = [f"{r.name}=={locked[canonicalize_name(r.name)]} vs {r}" for r in requirements()
               if r.name != "torch" and not r.specifier.contains(locked[canonicalize_name(r.name)], prereleases=True)]
    assert not outside, f"constraints/newest.txt pins versions pyproject.toml refuses: {outside}"
    differ = {n: (str(locked[n]), str(v)) for n, v in colab.items() if n in locked and locked[n] != v}
    assert not differ, f"the lock and constraints/colab.txt disagree (lock, colab): {differ}"


def test_make_test_installs_from_the_lock():
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert "LOCK       := constraints/newest.txt" in makefile
    kit = re.findall(r"^\t\$\((?:PIP|UV)_INSTALL\) -e .*$", makefile, re.M)      # .venv's installs of the kit
    assert len(kit) == 3 and all(line.endswith("$(LOCKED)") for line in kit), kit
    assert re.search(r"^UV_SPEC +\?= uv==[0-9.]+$", makefile, re.M), "uv, which installs from the lock, is pinned"


def _pip_commands_of(path: Path, monkeypatch) -> list[list[str]]:
    """Run the setup cell as Colab would (google.colab importable), recording the commands instead of running."""
    source = nbformat.read(path, as_version=4).cells[1].source
    assert "google.colab" in source, f"{path.name}: cells[1] is not the setup cell"
    commands: list[list[str]] = []
    monkeypatch.setitem(sys.modules, "google", types.ModuleType("google"))
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    monkeypatch.setattr(subprocess, "run", lambda args, **kwargs: commands.append(list(args)))
    exec(compile(source, str(path), "exec"), {"__name__": "__main__"})
    return commands


@pytest.mark.parametrize("path", NOTEBOOKS, ids=NOTEBOOK_IDS)
def test_setup_cell_installs_the_release_tag_with_the_constraints(path, monkeypatch):
    commands = _pip_commands_of(path, monkeypatch)
    assert commands == [[sys.executable, "-m", "pip", "install", "-q", "-c", CONSTRAINTS_URL,
                         f"labkit @ git+{REPO_URL}@{TAG}"]], \
        f"{path.name}: the setup cell must install labkit at {TAG} with the constraints file at the same tag"
    assert CONSTRAINTS_URL.endswith("/" + CONSTRAINTS.relative_to(ROOT).as_posix()) and CONSTRAINTS.is_file()


def test_readme_shows_the_command_the_cells_run():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert CONSTRAINTS_URL in readme and f'"labkit @ git+{REPO_URL}@{TAG}"' in readme, \
        f"README's Colab section must show the install of {TAG}"


def test_ci_runs_both_ends_and_the_makefile_resolves_the_low_end_lowest():
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert re.search(r"^make test$", ci, re.M) and re.search(r"^make test-lowest$", ci, re.M)
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert "--resolution lowest-direct" in makefile and "--override" in makefile


def test_environment_yml_takes_its_ranges_from_pyproject():
    """environment.yml installs the kit itself (`-e .[dev]`); a second list of ranges there would drift."""
    text = (ROOT / "environment.yml").read_text(encoding="utf-8")
    assert "-e .[dev]" in text
    ranges = re.findall(r"^\s*-\s+([A-Za-z][\w.-]*\s*[<>=!~].*)$", text, re.M)
    assert [Requirement(r).name for r in ranges if not r.startswith("python")] == ["torch"]


@pytest.mark.parametrize("user_id, allowed", [("0", True), ("1000", False)])
def test_make_lab_starts_as_root_too(user_id, allowed):
    """Jupyter stops as root unless told --allow-root; `make lab` tells it exactly when the user is root."""
    dry = subprocess.run(["make", "-n", "lab", f"USER_ID={user_id}", "CI=true"], cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    assert dry.returncode == 0, dry.stderr
    (line,) = [line for line in dry.stdout.splitlines() if "jupyter lab" in line]
    assert ("--allow-root" in line) == allowed, line


def test_torch_build_chosen_for_the_machine(monkeypatch):
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import torch_install as ti
    finally:
        sys.path.pop(0)
    spec = "torch==2.13.0"
    monkeypatch.setattr(ti, "venv_has_cuda_torch", lambda python: True)
    assert ti.choose("py", spec, None)[0] == []                          # a CUDA torch stays
    monkeypatch.setattr(ti, "venv_has_cuda_torch", lambda python: False)
    assert ti.choose("py", spec, "https://example.org/idx")[0] == ["--index-url", "https://example.org/idx", spec]
    monkeypatch.setattr(ti.platform, "system", lambda: "Linux")
    monkeypatch.setattr(ti, "has_nvidia_gpu", lambda: False)
    monkeypatch.setattr(ti, "answers", lambda url, timeout=5.0: True)
    assert ti.choose("py", spec, None)[0] == ["--extra-index-url", ti.CPU_INDEX, spec]
    monkeypatch.setattr(ti, "answers", lambda url, timeout=5.0: False)
    args, line = ti.choose("py", spec, None)
    assert args == [spec] and "does not answer" in line
    monkeypatch.setattr(ti, "has_nvidia_gpu", lambda: True)
    assert ti.choose("py", spec, None) == ([spec], None)
    monkeypatch.setattr(ti.platform, "system", lambda: "Darwin")
    monkeypatch.setattr(ti, "has_nvidia_gpu", lambda: False)
    assert ti.choose("py", spec, None) == ([spec], None)
