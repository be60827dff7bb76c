"""The stable API (README, "Python API"): the names notebooks, exercises and users' scripts rely on."""
import inspect
import pathlib
import subprocess
import sys

import pytest

import labkit

ROOT = pathlib.Path(__file__).resolve().parents[1]
API = {"RunConfig", "run", "estimate", "sweep", "largest_micro_batch", "load_records", "lab"}


def test_importing_labkit_loads_no_torch():
    code = "import sys, labkit; labkit.RunConfig(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "False"


def test_every_api_name_resolves_to_what_the_readme_says():
    from labkit.course.lab import lab
    from labkit.experiment import estimate, run
    from labkit.search import largest_micro_batch
    from labkit.sweeps import load_records, run_sweep

    assert API <= set(dir(labkit))
    assert labkit.run is run and labkit.estimate is estimate and labkit.lab is lab
    assert labkit.sweep is run_sweep and labkit.load_records is load_records
    assert labkit.largest_micro_batch is largest_micro_batch
    assert list(inspect.signature(labkit.run).parameters)[:3] == ["cfg", "steps", "warmup"]


def test_unknown_names_are_attribute_errors():
    with pytest.raises(AttributeError, match="no attribute 'runner'"):
        labkit.runner                                      # noqa: B018 — moved to labkit.engine.runner


def test_sweep_and_load_records_round_trip_through_the_api(tmp_path):
    cfgs = [labkit.RunConfig(micro_batch=1), labkit.RunConfig(micro_batch=2)]

    def theory_only(cfg, steps, warmup):                     # no model loads: the API plumbing is what is tested
        return labkit.estimate(cfg)

    out = tmp_path / "grid.jsonl"
    written = labkit.sweep(cfgs, out, steps=1, warmup=0, progress=False, runner=theory_only)
    back = labkit.load_records(out)
    assert [r.config["micro_batch"] for r in back] == [1, 2] == [r.config["micro_batch"] for r in written]
    assert back[1].theory.activations == 2 * back[0].theory.activations


@pytest.mark.parametrize("path", sorted((ROOT / "labkit" / "reference").glob("*.jsonl")), ids=lambda p: p.name)
def test_load_records_reads_every_committed_reference_set(path):
    records = labkit.load_records(path)
    assert records and all({"config", "theory", "measured", "status"} <= set(r) for r in records)


def test_a_request_is_planned_once_and_its_advice_points_at_the_caller(monkeypatch):
    """labkit.run / labkit.estimate resolve the model's shape once (a custom model's config.json is read once for
    the theory, the advice and the record; the engine reads it once more to load the model), and the advice
    the shape gives is a warning whose line is the caller's."""
    import warnings

    from labkit import experiment
    from labkit.engine import models
    calls = []

    def counting(where, real):
        return lambda *a, **k: calls.append(where) or real(*a, **k)

    monkeypatch.setattr(experiment, "resolve_shape", counting("experiment", experiment.resolve_shape))
    monkeypatch.setattr(models, "resolve_shape", counting("engine", models.resolve_shape))
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        labkit.estimate(labkit.RunConfig(seq_len=4096))                     # beyond tiny's 2048 positions: advice
    assert calls == ["experiment"]
    advice = [w for w in said if "beyond the model's" in str(w.message)]
    assert advice and advice[0].filename == __file__
    calls.clear()
    assert labkit.run(labkit.RunConfig(seq_len=32, micro_batch=1, grad_accum=1), steps=1, warmup=0).status == "ok"
    assert calls == ["experiment", "engine"]
