"""benchmarks/gpu_check.py on a CPU: `--help` works, the script refuses in one line (exit 2), and its sections'
plumbing (tables, checks, JSONL) runs on handmade records standing in for the GPU runs it would start."""
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from labkit.config import RunConfig

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"
MiB, GiB = 1024 ** 2, 1024 ** 3


@pytest.fixture
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def script(*args):
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=120)


def test_help_and_the_list_of_parts_on_a_cpu(gpu_check):
    p = script("--help")
    assert p.returncode == 0 and "--quick" in p.stdout and "--out DIR" in p.stdout and "T4-profile" in p.stdout
    listed = script("--list")
    assert listed.returncode == 0 and listed.stdout.strip() in p.stdout           # --help shows the parts too
    rows = [line.split()[:2] for line in listed.stdout.splitlines()[1:] if line[1:2] == " " and "~" in line]
    assert [r[0] for r in rows] == list(gpu_check.PARTS) == list("abcdefghij")
    assert all(int(minutes.lstrip("~")) <= 8 for _, minutes in rows)             # each part fits an 8-minute loan
    lessons = sorted(n for part in gpu_check.LESSON_PARTS.values() for n in part)
    assert lessons == sorted(p.stem for p in (ROOT / "notebooks").glob("*.ipynb"))   # every lesson, once


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for machines without CUDA")
def test_refuses_without_cuda_in_one_line(tmp_path):
    p = script("--out", str(tmp_path / "out"))
    assert p.returncode == 2 and p.stdout == ""
    assert p.stderr.count("\n") == 1 and p.stderr.startswith("gpu_check: error: needs a CUDA GPU")
    assert not (tmp_path / "out").exists()                   # nothing run, nothing written
    assert script("--only", "xyz").returncode == 2


def _record(cfg, status="ok", peak=None, theory_peak=None):
    return {"config": cfg.to_dict(), "status": status, "error": None if status == "ok" else "CUDA out of memory",
            "labels": ["t4-profile", "shape-only"], "measured": {"peak_allocated_bytes": peak},
            "theory": {"peak": theory_peak}}


def _rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_section_b_compares_search_runs_alone_and_theory(gpu_check, monkeypatch, tmp_path, capsys):
    from labkit import fresh
    from labkit.experiment import estimate
    from labkit.engine.hardware import T4_TOTAL_MEMORY
    llama = RunConfig(model="llama-3.2-1b", seq_len=512, grad_accum=1, precision="fp16")
    at_cap = gpu_check.theory_largest(llama, T4_TOTAL_MEMORY)
    peak = [estimate(llama.replace(micro_batch=b))["theory"]["peak"] for b in (at_cap, at_cap + 1)]
    assert peak[0] <= T4_TOTAL_MEMORY < peak[1]                  # the largest theory fit, exactly

    def search(cfg, lo, hi, weights, t4_profile):
        assert t4_profile and weights == "random" and cfg.precision == "fp16" and cfg.gradient_checkpointing
        return {"best": at_cap, "trail": [{"micro_batch": b, "status": "ok" if b <= at_cap else "oom"}
                                          for b in (1, 2, 4, 8, 16, at_cap)]}

    def run(cfg, steps, weights, t4_profile):
        assert steps == 1 and t4_profile
        fits = cfg.micro_batch <= at_cap
        return _record(cfg, "ok" if fits else "oom", 14 * GiB if fits else None)

    monkeypatch.setattr(fresh, "search", search)
    monkeypatch.setattr(fresh, "run", run)
    gpu_check.section_b(gpu_check.Writer(tmp_path), "T4-profile: stand-in records", (512,))
    out = capsys.readouterr().out
    assert "T4-profile" in out and "theory ≤ 14.75 GiB" in out and "oom —" in out
    assert all(passed for _, passed, _ in gpu_check.RESULTS), gpu_check.RESULTS
    row, = _rows(tmp_path / "b_search.jsonl")
    assert row["search_best"] == at_cap and row["theory_largest_at_14_75_gib"] == at_cap
    assert row["theory_largest_at_14_25_gib"] <= at_cap and set(row["runs_alone"]) == {str(at_cap), str(at_cap + 1)}


def test_section_c_reports_error_and_goal_per_config(gpu_check, monkeypatch, tmp_path, capsys):
    from labkit import fresh
    seen = []

    def run(cfg, steps, weights, t4_profile):
        seen.append((cfg.model, cfg.precision, cfg.gradient_checkpointing))
        if cfg.model == "qwen2.5-0.5b":
            return _record(cfg, "oom")
        if cfg.model == "tiny":                               # 20 MiB off: outside tiny's ±16 MiB
            return _record(cfg, peak=100 * MiB, theory_peak=80 * MiB)
        return _record(cfg, peak=4 * GiB, theory_peak=int(4 * GiB * 1.02))   # +2 %: inside ±3 %

    monkeypatch.setattr(fresh, "run", run)
    gpu_check.section_c(gpu_check.Writer(tmp_path), "T4-profile: stand-in records", ("fp16", "fp32"), (True, False))
    assert len(seen) == 12 and set(seen) == {(m, p, g) for m in ("tiny", "llama-3.2-1b", "qwen2.5-0.5b")
                                             for p in ("fp16", "fp32") for g in (True, False)}
    reference, = (tmp_path / "reference").glob("*.jsonl")          # every measured record (4 OOMs too), a line each
    assert reference.name.startswith("gpu-t4-profile-") and len(_rows(reference)) == 12
    verdicts = {name: passed for name, passed, _ in gpu_check.RESULTS}
    assert verdicts["c: llama-3.2-1b fp16 ckpt on"] and not verdicts["c: tiny fp32 ckpt off"]
    assert not verdicts["c: qwen2.5-0.5b fp16 ckpt on"]                  # an OOM is not a met goal
    rows = _rows(tmp_path / "c_peak_grid.jsonl")
    llama = next(r for r in rows if r["model"] == "llama-3.2-1b")
    assert llama["error"] == pytest.approx(0.02, abs=1e-6) and llama["met"] and llama["goal"] == "±3%"
    assert "+2.0%" in capsys.readouterr().out


def test_section_a_measures_each_stage_and_flags_a_leak(gpu_check, monkeypatch, tmp_path):
    import labkit.experiment
    allocated = [0]
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a: None)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda *a: None)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda *a: allocated[0])
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda *a: allocated[0] + 2 * MiB)

    def run(cfg, steps, warmup, device, weights):
        assert (steps, warmup, device, weights) == (1, 0, "cuda", "random")
        if cfg.seq_len == 2048:
            allocated[0] += 13 * GiB                           # the leak the H100 records saw
            return _record(cfg, "oom")
        return _record(cfg, peak=5 * GiB)

    monkeypatch.setattr(labkit.experiment, "run", run)
    gpu_check.section_a(gpu_check.Writer(tmp_path), "T4-profile: stand-in records")
    verdicts = {name: passed for name, passed, _ in gpu_check.RESULTS}
    assert verdicts["a: too-big run is an OOM"] and not verdicts["a: the OOM leaves nothing allocated"]
    stages = _rows(tmp_path / "a_oom_scene.jsonl")
    assert len(stages) == 5 and stages[2]["allocated_bytes"] - stages[1]["allocated_bytes"] == 13 * GiB


def test_the_lesson_parts_run_each_lesson_after_a_t4_profile_cell_and_read_its_outputs(gpu_check, monkeypatch,
                                                                                         tmp_path):
    import nbformat
    (tmp_path / "repo" / "notebooks").mkdir(parents=True)
    for name, code in (("good", "print('fine')"), ("bad", "1 / 0"), ("says_none", "print('peak: None MiB')")):
        nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code)])
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nbformat.write(nb, tmp_path / "repo" / "notebooks" / f"{name}.ipynb")
    monkeypatch.setattr(gpu_check, "ROOT", tmp_path / "repo")
    # t4_profile() needs CUDA: here the first cell leaves a mark instead, to show it runs before the lesson
    assert "t4_profile()" in gpu_check.T4_FIRST_CELL
    monkeypatch.setattr(gpu_check, "T4_FIRST_CELL", "T4_MARK = 'profile set first'")
    gpu_check.section_lessons(gpu_check.Writer(tmp_path / "out"), tmp_path / "out", "g", ("good", "bad", "says_none"))
    rows = {r["lesson"]: r for r in _rows(tmp_path / "out" / "g_lessons.jsonl")}
    assert rows["good"]["passed"] and not rows["bad"]["passed"] and "ZeroDivisionError" in rows["bad"]["error"]
    assert rows["says_none"]["passed"] and rows["says_none"]["problems"] == ["cell 1: None — 'peak: None MiB'"]
    verdicts = {name: passed for name, passed, _ in gpu_check.RESULTS}
    assert verdicts["g: lesson good reads clean"] and not verdicts["g: lesson says_none reads clean"]
    kept = nbformat.read(tmp_path / "out" / "notebooks" / "good.ipynb", 4)           # executed copies kept
    assert kept.cells[0].source == "T4_MARK = 'profile set first'" and kept.cells[1].outputs[0]["text"] == "fine\n"


@pytest.mark.parametrize("letter, t4", [("f", False), ("i", True)])
def test_the_time_parts_compare_step_time_and_deltas_with_the_time_theory(letter, t4, gpu_check, monkeypatch,
                                                                          tmp_path, capsys):
    import subprocess
    from labkit import fresh
    calls = []

    def calibrate(cmd, **kwargs):
        calls.append(cmd[-2:])
        return subprocess.CompletedProcess(cmd, 0, "time constants (calibrated on NVIDIA H200, …)", "")

    def run(cfg, steps, weights, t4_profile):
        assert t4_profile is t4                                   # f: this GPU's own path; i: a T4's
        # measured: 0.2 s flat up to mb 4, then 0.3 s; ckpt off 0.15 s (ckpt on costs +33 %); fp32 0.21 s
        measured = {1: 0.2, 2: 0.2, 4: 0.2, 8: 0.3}[cfg.micro_batch]
        if not cfg.gradient_checkpointing:
            measured = 0.15
        if cfg.precision == "fp32":
            measured = 0.21
        theory = 0.21 if cfg.micro_batch < 8 else 0.45            # mb 8: +50 % off → a failed step check
        rec = _record(cfg)
        rec["measured"]["step_time_s"] = measured
        rec["theory"]["time"] = {"step_s": theory, "regime": "overhead",
                                 "constants": {"source": "calibrated on NVIDIA H200, 2026-12-01"}}
        return rec

    monkeypatch.setattr(subprocess, "run", calibrate)
    monkeypatch.setattr(fresh, "run", run)
    gpu_check.section_time(gpu_check.Writer(tmp_path), "T4-profile: stand-in records", letter, t4)
    assert calls == [["--force", "--t4-profile"] if t4 else ["calibrate", "--force"]]
    verdicts = {name[3:]: passed for name, passed, _ in gpu_check.RESULTS if name.startswith(f"{letter}: ")}
    assert len(verdicts) == 1 + 6 + 3
    assert verdicts["step time mb 1"]                                                     # 0.21 vs 0.2: +5 %
    assert verdicts["labkit calibrate --force" + (" --t4-profile" if t4 else "")]
    assert not verdicts["step time mb 8"]                                                 # 0.45 vs 0.3: +50 %
    assert verdicts["delta micro-batch 1 → 4"]                                            # ±0 vs ±0
    assert not verdicts["delta checkpointing off → on"]                                   # +33 % vs ±0 %
    deltas = {r["delta"]: r for r in _rows(tmp_path / f"{letter}_deltas.jsonl")}
    assert deltas["checkpointing off → on"]["gap_points"] == pytest.approx(-100 / 3)
    assert "overhead" in capsys.readouterr().out
    reference, = (tmp_path / "reference").glob("*.jsonl")
    assert ("-t4-profile-" in reference.name) is t4 and len(_rows(reference)) == 6


def test_the_op_count_part_holds_both_paths_to_the_goal(gpu_check, monkeypatch, tmp_path):
    import labkit.engine.hardware as hardware
    calls = []
    monkeypatch.setattr(hardware, "t4_profile_off", lambda: calls.append("off"))
    monkeypatch.setattr(hardware, "t4_profile", lambda: calls.append("on"))
    real = gpu_check._op_count_table()

    class Grid:                        # op_count_table's grid, runs made up: the own path within 5 %, the T4's not
        VARIANTS, worst = real.VARIANTS, staticmethod(real.worst)

        @staticmethod
        def table(models, variants=real.VARIANTS):
            t4 = calls[-1] == "on"
            calls.append(("table", len(variants)))
            return [{"model": m, "variant": v, "status": "ok", "error": 0.08 if t4 else 0.01}
                    for m in models for v, _ in variants]

    monkeypatch.setattr(gpu_check, "_op_count_table", lambda: Grid)
    gpu_check.section_j(gpu_check.Writer(tmp_path), "T4-profile: stand-in records", quick=True)
    bf16 = sum(change.get("precision") == "bf16" for _, change in real.VARIANTS)
    assert bf16 and calls == ["off", ("table", len(real.VARIANTS)), "on", ("table", len(real.VARIANTS) - bf16)]
    verdicts = {name: passed for name, passed, _ in gpu_check.RESULTS}
    assert verdicts["j: op counts, own path"] and not verdicts["j: op counts, T4 profile"]
    assert {r["path"] for r in _rows(tmp_path / "j_op_counts.jsonl")} == {"own path", "T4 profile"}
    assert real.worst([{"error": 0.01}, {"error": None}]) == float("inf")          # a run that did not finish


def test_the_reference_readme_has_a_row_per_set(gpu_check, tmp_path):
    write = gpu_check.Writer(tmp_path, "NVIDIA H100 80GB HBM3", "2026-12-08")
    cfg = RunConfig(model="llama-3.2-1b")
    for status in ("ok", "oom"):
        write.reference(_record(cfg, status), t4=True)
    write.reference(_record(cfg), t4=False)
    facts = {"gpu": "NVIDIA H100 80GB HBM3", "time": "2026-12-08T10:00:00+00:00", "labkit_commit": "abc1234",
             "torch": "2.13.0", "transformers": "5.24.0", "peft": "0.21.0", "bitsandbytes": "0.50.2"}
    text = gpu_check.reference_readme(tmp_path, facts, ["--only", "c"])
    assert "| `nvidia-h100-80gb-hbm3-t4-profile-2026-12-08` | an NVIDIA H100 80GB HBM3 in T4 profile, 2026-12-08 |" \
        in text and "2 runs, each in a fresh process (1 ok, 1 OOM)" in text and "--only c" in text
    assert "| `nvidia-h100-80gb-hbm3-2026-12-08` | an NVIDIA H100 80GB HBM3, 2026-12-08 |" in text
    assert (tmp_path / "reference" / "README.md").read_text() == text
    assert gpu_check.reference_readme(tmp_path / "none", facts, []) is None
