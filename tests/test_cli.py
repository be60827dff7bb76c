"""The command line: doctor, estimate, run and sweep, and bad input as one clean line with exit code 2."""
import json
import os
import subprocess
import sys

import pytest

from labkit import cli, flags

pytestmark = pytest.mark.long      # half a minute or more: started early (tests/conftest.py)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "LABKIT_OFFLINE": "1", "MPLBACKEND": "Agg",
       "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}


def labkit(*args, timeout=120, cwd=REPO):
    return subprocess.run([sys.executable, "-m", "labkit", *args], cwd=cwd, env=ENV, capture_output=True,
                          text=True, timeout=timeout)


def test_doctor(capsys):
    assert cli.main(["doctor"]) == 0                       # in this process: the fresh one below is the --json one
    assert "recommended precision" in capsys.readouterr().out
    p = labkit("doctor", "--json")
    facts = json.loads(p.stdout)
    assert p.returncode == 0
    assert {"type", "name", "capability", "total_memory", "free_memory", "native_bf16", "torch_says_bf16_supported",
            "recommended_precision", "versions", "in_colab", "hub_reachable", "expandable_segments"} <= set(facts)
    assert facts["hub_reachable"] is False and "offline mode" in facts["hub_reason"]


def test_estimate_llama_1b_json():
    p = labkit("estimate", "--model", "llama-3.2-1b", "--seq-len", "512", "--micro-batch", "2", "--json")
    assert p.returncode == 0, p.stderr
    lines = p.stdout.strip().splitlines()
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert {"config", "resolved", "labels", "theory", "measured", "status", "device"} <= set(record)
    assert record["config"]["model"] == "llama-3.2-1b" and record["config"]["seq_len"] == 512
    assert {"weights", "lora", "gradients", "optimizer", "activations", "logits", "peak",
            "simple_rule_activations", "step_flops"} <= set(record["theory"])
    assert record["theory"]["trainable_params"] == 3_407_872        # r=16 on q,k,v,o (course brief, lesson 6)
    assert all(v is None for v in record["measured"].values())     # theory only: nothing measured
    assert "theory-only" in record["labels"]


BAD = [
    (["run", "--micro-batch", "0"], "micro_batch"),
    (["run", "--grad-accum", "-1"], "grad_accum"),
    (["estimate", "--model", "no-such-model"], "unknown model"),
    (["estimate", "--model", "/nonexistent/config.json"], "unknown model"),
    (["estimate", "--lora-targets", "q_proj,x_proj"], "x_proj"),
    (["estimate", "--seq-len", "2.5"], "not an integer"),
    (["run", "--steps", "many"], "not an integer"),
    (["run", "--precision", "fp8"], "precision"),
    (["run", "--checkpointing", "maybe"], "on or off"),
    (["sweep", "--micro-batch", "1,0"], "micro_batch=0"),
    (["estimate", "--micro-batch", "1,2"], "labkit sweep"),
    (["frobnicate"], "invalid choice"),
    (["estimate", "--no-such-flag"], "unrecognized arguments"),
    ([], "choose a command"),
]


@pytest.mark.parametrize("args, words", BAD, ids=[" ".join(a) or "nothing" for a, _ in BAD])
def test_bad_input_is_one_line(args, words):
    p = labkit(*args)
    assert p.returncode == 2
    assert p.stderr.count("\n") == 1 and p.stderr.startswith("labkit: error: "), p.stderr
    assert words in p.stderr and "Traceback" not in p.stderr
    assert p.stdout == ""


def test_unreadable_config_file(tmp_path, capsys):
    bad = tmp_path / "config.json"
    bad.write_text("{not json")
    assert cli.main(["estimate", "--model", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("labkit: error: cannot read model config") and err.count("\n") == 1


def test_bf16_refused_on_a_t4(monkeypatch, capsys):
    import labkit.engine.hardware
    t4 = {"type": "cuda", "name": "Tesla T4", "capability": [7, 5]}
    monkeypatch.setattr(labkit.engine.hardware, "device_facts", lambda **kw: t4)
    assert cli.main(["run", "--precision", "bf16"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("labkit: error: bf16 is not native") and err.count("\n") == 1


def _fake_run(status):
    def run(cfg, steps=3, warmup=1, **kw):
        return {"config": cfg.to_dict(), "resolved": {"precision": "fp32", "device": "cpu"}, "labels": ["fake"],
                "theory": {"activations": 100, "logits": 20, "step_flops": 1e9 * cfg.micro_batch},
                "measured": {"saved_activation_bytes": None if status != "ok" else 118 * cfg.micro_batch,
                             "step_time_s": None if status != "ok" else 0.5 * cfg.micro_batch},
                "status": status, "error": None if status == "ok" else "handmade", "steps": steps}
    return run


@pytest.mark.parametrize("status, code", [("ok", 0), ("oom", 0), ("error", 1)])
def test_run_exit_codes(monkeypatch, capsys, status, code):
    import labkit.experiment
    monkeypatch.setattr(labkit.experiment, "run", _fake_run(status))
    assert cli.main(["run", "--json", "--steps", "2"]) == code          # an OOM is a result, not a failure
    record = json.loads(capsys.readouterr().out)
    assert record["status"] == status and record["steps"] == 2


def test_sweep_default_grid_and_plot(monkeypatch, tmp_path, capsys):
    import labkit.experiment
    monkeypatch.setattr(labkit.experiment, "run", _fake_run("ok"))
    out, png = tmp_path / "demo.jsonl", tmp_path / "demo.png"
    assert cli.main(["sweep", "--out", str(out), "--plot", str(png), "--seq-len", "64"]) == 0
    table = capsys.readouterr().out
    assert "gc off · mb 4 · fp32" in table and table.count(" ok ") == 6      # 2 × 3 demo grid
    # bytes, changes and ratios as labkit.units writes them everywhere: 3 significant figures, a real minus sign
    assert "gc on · mb 1 · fp32        ok         118 B         120 B     \u22122%      0.5 s       1×" in table
    assert "gc off · mb 4 · fp32       ok         472 B         120 B   +293%        2 s       4×" in table
    assert len(out.read_text().splitlines()) == 6 and png.read_bytes()[:4] == b"\x89PNG"
    # comma lists become axes; --json prints one record per line
    assert cli.main(["sweep", "--out", str(tmp_path / "b.jsonl"), "--micro-batch", "1,2",
                     "--precision", "fp32,bf16", "--lora-targets", "q_proj,v_proj/q_proj", "--json"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(records) == 8
    assert {tuple(r["config"]["lora_targets"]) for r in records} == {("q_proj", "v_proj"), ("q_proj",)}
    assert (tmp_path / "b.png").read_bytes()[:4] == b"\x89PNG"                  # the chart by default, beside --out


def test_a_rerun_of_a_sweep_says_what_it_read_back_and_where_the_records_are(monkeypatch, tmp_path, capsys):
    import labkit.experiment
    monkeypatch.setattr(labkit.experiment, "run", _fake_run("ok"))
    out = tmp_path / "s.jsonl"
    argv = ["sweep", "--out", str(out), "--micro-batch", "1,2", "--no-plot"]
    assert cli.main(argv) == 0
    err = capsys.readouterr().err
    assert "resumed" not in err and f"records in {out}" in err and not (tmp_path / "s.png").exists()
    assert cli.main(argv + ["--checkpointing", "on"]) == 0 and cli.main(argv + ["--micro-batch", "1,2,4"]) == 0
    assert f"resumed: 2 of 3 runs already measured in {out}" in capsys.readouterr().err


def test_run_tiny_for_real():
    # a fresh process: what it says once (the notes) must not reach stdout, which holds nothing but the JSON record
    p = labkit("run", "--model", "tiny", "--steps", "1", "--warmup", "0", "--seq-len", "64", "--micro-batch", "1",
               "--grad-accum", "1", "--json", timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    record = json.loads(p.stdout)
    assert record["status"] == "ok" and "cpu" in record["labels"]
    assert record["measured"]["saved_activation_bytes"] > 0 and record["measured"]["step_time_s"] > 0
    assert len(record["measured"]["loss"]) == 1


def test_search_largest_micro_batch_under_a_simulated_budget(capsys):
    rc = cli.main(["search", "--seq-len", "64", "--memory-budget-gb", "0.012", "--max", "32", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0
    assert isinstance(out["best"], int) and 1 <= out["best"] < 32
    assert "simulated-oom" in out["labels"]
    assert cli.main(["search", "--min", "8", "--max", "4"]) == 2
    assert "below --min" in capsys.readouterr().err


def test_exercises_command_checks_the_generated_notebooks(tmp_path, capsys):
    assert cli.main(["exercises", "--check", os.path.join(REPO, "solutions"), os.path.join(REPO, "exercises")]) == 0
    assert cli.main(["exercises", os.path.join(REPO, "solutions"), str(tmp_path / "ex")]) == 0
    assert sorted(p.name for p in (tmp_path / "ex").glob("*.ipynb")) == \
        sorted(p for p in os.listdir(os.path.join(REPO, "solutions")) if p.endswith(".ipynb"))


@pytest.mark.parametrize("args,words", [
    (["run", "--steps", "2", "--warmup", "2"], "must be below --steps"),
    (["sweep", "--steps", "1", "--warmup", "1", "--micro-batch", "1,2"], "must be below --steps"),
    (["sweep", "--micro-batch", "1,2", "--plot", "/no/such/folder/x.png"], "does not exist"),
])
def test_step_and_path_errors_come_before_any_run(args, words, capsys, tmp_path):
    out = str(tmp_path / "s.jsonl")
    assert cli.main(args + ["--out", out] if args[0] == "sweep" else args) == 2
    err = capsys.readouterr().err
    assert words in err and err.count("\n") == 1
    assert not os.path.exists(out)                      # nothing was run or written


# ---- --t4-profile ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("command", ["run", "sweep", "search", "calibrate"])
def test_t4_profile_flag_parses_for_run_sweep_search_and_calibrate(command, capsys):
    args = cli.build_parser().parse_args([command, "--t4-profile"])
    assert args.t4_profile is True
    assert cli.build_parser().parse_args([command]).t4_profile is False
    with pytest.raises(SystemExit) as done:
        cli.main([command, "--help"])
    assert done.value.code == 0
    assert "--t4-profile" in capsys.readouterr().out           # documented in --help


def test_t4_profile_is_not_an_estimate_or_doctor_flag():
    for command in ("estimate", "doctor"):
        p = labkit(command, "--t4-profile")
        assert p.returncode == 2 and "unrecognized arguments: --t4-profile" in p.stderr


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="the refusal is for machines without CUDA")
@pytest.mark.parametrize("command", ["run", "sweep", "search", "calibrate"])
def test_t4_profile_without_cuda_is_refused_in_one_line(command, capsys):
    # `run` in a fresh process, as a learner types it; sweep and search in this one (the same refusal, one code path:
    # an interpreter each would add ~2 s and no check)
    if command == "run":
        p = labkit(command, "--t4-profile", "--seq-len", "32")
        rc, out, err = p.returncode, p.stdout, p.stderr
    else:
        rc = cli.main([command, "--t4-profile"] + ([] if command == "calibrate" else ["--seq-len", "32"]))
        out, err = capsys.readouterr()
    assert rc == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("labkit: error: --t4-profile needs a CUDA GPU"), err


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="the refusal is for machines without CUDA")
@pytest.mark.parametrize("command", ["run", "sweep", "search", "calibrate"])
def test_t4_profile_refusal_comes_before_any_work(command, monkeypatch, tmp_path, capsys):
    import labkit.search
    import labkit.experiment
    from labkit.engine import calibrate

    def no_work(*a, **kw):
        raise AssertionError("a run started although --t4-profile was refused")

    monkeypatch.setattr(labkit.experiment, "run", no_work)
    monkeypatch.setattr(labkit.search, "largest_micro_batch", no_work)
    monkeypatch.setattr(calibrate, "calibrate", no_work)
    out = tmp_path / "sub" / "s.jsonl"
    extra = ["--out", str(out)] if command == "sweep" else []
    assert cli.main([command, "--t4-profile"] + extra) == 2
    assert "--t4-profile needs a CUDA GPU" in capsys.readouterr().err
    assert not out.parent.exists()                      # sweep made no folder, wrote nothing


def test_t4_profile_is_set_before_the_run_on_a_gpu(monkeypatch, capsys):
    """With CUDA (faked here), the cap is set first, and the config checks then treat the GPU as a T4."""
    import torch

    import labkit.experiment
    import labkit.engine.hardware
    calls = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(labkit.engine.hardware, "t4_profile", lambda: calls.append("t4_profile") or 0.11)
    monkeypatch.setattr(labkit.engine.hardware, "t4_profile_active", lambda: "t4_profile" in calls)
    monkeypatch.setattr(labkit.engine.hardware, "device_facts",
                        lambda **kw: calls.append("device_facts") or {"type": "cuda", "name": "NVIDIA H200",
                                                                      "capability": [9, 0]})
    fake = _fake_run("ok")
    monkeypatch.setattr(labkit.experiment, "run", lambda *a, **kw: calls.append("run") or fake(*a, **kw))
    assert cli.main(["run", "--t4-profile", "--json"]) == 0
    assert calls == ["t4_profile", "device_facts", "run"]
    capsys.readouterr()
    calls.clear()
    assert cli.main(["run", "--t4-profile", "--precision", "bf16"]) == 2     # an H200 has bf16; a T4 does not
    assert "bf16 is not native" in capsys.readouterr().err and "run" not in calls


# ---- warm-up default ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("argv, warmup", [(["--steps", "1"], 0), (["--steps", "2"], 1), (["--steps", "5"], 1),
                                          ([], 1), (["--steps", "3", "--warmup", "0"], 0),
                                          (["--steps", "4", "--warmup", "2"], 2)])
def test_default_warmup_is_one_step_or_none_when_only_one_step(argv, warmup, monkeypatch, capsys):
    import labkit.experiment
    seen = {}
    fake = _fake_run("ok")

    def run(cfg, steps=3, warmup=1, **kw):
        seen["steps"], seen["warmup"] = steps, warmup
        return fake(cfg, steps, warmup, **kw)

    monkeypatch.setattr(labkit.experiment, "run", run)
    assert cli.main(["run", "--json"] + argv) == 0
    assert seen["warmup"] == warmup


def test_sweep_with_one_step_times_it_without_warmup(monkeypatch, tmp_path, capsys):
    import labkit.experiment
    seen = []
    fake = _fake_run("ok")

    def run(cfg, steps=3, warmup=1, **kw):
        seen.append(warmup)
        rec = fake(cfg, steps, warmup, **kw)
        rec["labels"] += ["time-includes-warmup"] if warmup == 0 else []
        return rec

    monkeypatch.setattr(labkit.experiment, "run", run)
    assert cli.main(["sweep", "--steps", "1", "--micro-batch", "1,2", "--out", str(tmp_path / "s.jsonl")]) == 0
    assert seen == [0, 0]
    assert cli.WARMUP_NOTE in capsys.readouterr().out


def test_explicit_warmup_as_long_as_the_steps_stays_an_error(capsys):
    assert cli.main(["run", "--steps", "1", "--warmup", "1"]) == 2
    err = capsys.readouterr().err
    assert "--warmup 1 must be below --steps 1" in err and err.count("\n") == 1


def test_run_one_step_for_real_says_the_time_includes_the_first_step(capsys):
    # in this process: test_run_tiny_for_real runs `python -m labkit run` in a fresh one; a second interpreter
    # importing torch, transformers and peft would add ~9 s and nothing to what these lines check
    rc = cli.main(["run", "--model", "tiny", "--steps", "1", "--seq-len", "64", "--micro-batch", "1",
                   "--grad-accum", "1"])
    out = capsys.readouterr()
    assert rc == 0, out.err[-2000:]
    assert "time-includes-warmup" in out.out
    assert out.out.rstrip().endswith(cli.WARMUP_NOTE)
    held = [line for line in out.out.splitlines() if line.startswith("held before the run")]
    assert len(held) == 1 and "(live tensors; included in the peak)" in held[0]
    # two steps: the first is the warm-up, and nothing says otherwise
    assert cli.main(["run", "--model", "tiny", "--steps", "2", "--seq-len", "64", "--micro-batch", "1",
                     "--grad-accum", "1"]) == 0
    out = capsys.readouterr().out
    assert "held before the run" in out                      # the same report as above, from a real run
    assert "time-includes-warmup" not in out and cli.WARMUP_NOTE not in out


# ---- a RunConfig back to flags ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("cfg", [
    flags.RunConfig(),
    flags.RunConfig(model="llama-3.2-1b", seq_len=512, micro_batch=3, grad_accum=1, pad_to_seq_len=False,
                  gradient_checkpointing=False, precision="fp16", lora_targets=("q_proj", "v_proj"), lora_alpha=0.5,
                  lora_dropout=0.0, optim="adamw", learning_rate=1e-4, eval_micro_batch=3, memory_budget_gb=0.25,
                  seed=7, quant="none", lora_r=8, num_gpus=2),
], ids=["defaults", "every-flag"])
def test_argv_for_round_trips_through_the_parser(cfg):
    argv = flags.argv_for(cfg)
    args = cli.build_parser().parse_args(["run"] + argv)
    assert flags.config_from_args(args) == cfg
    assert (argv == []) == (cfg == flags.RunConfig())


def test_argv_for_refuses_what_the_command_line_cannot_set():
    with pytest.raises(ValueError, match="prepare_kbit"):
        flags.argv_for(flags.RunConfig(prepare_kbit=True))


# ---- one answer at every door: ValueError in Python, exit 2 and one `labkit: error:` line on the command line --------
MODEL_JSON = {"model_type": "llama", "hidden_size": 256, "intermediate_size": 688, "num_hidden_layers": 2,
              "num_attention_heads": 8, "num_key_value_heads": 4, "vocab_size": 384}
# id → (RunConfig fields, or a change to a config.json given as the model; the command line; words in both answers)
SAME_ANSWER = {
    "checkpointing-word": ({"gradient_checkpointing": "off"}, ["--checkpointing", "maybe"], "checkpointing"),
    "pad-word": ({"pad_to_seq_len": "false"}, ["--pad", "nah"], "pad"),
    "alpha-nan": ({"lora_alpha": float("nan")}, ["--lora-alpha", "nan"], "lora_alpha must be finite, got nan"),
    "alpha-inf": ({"lora_alpha": float("inf")}, ["--lora-alpha", "inf"], "lora_alpha must be finite, got inf"),
    "lr-nan": ({"learning_rate": float("nan")}, ["--lr", "nan"], "learning_rate must be finite, got nan"),
    "lr-inf": ({"learning_rate": float("inf")}, ["--lr", "inf"], "learning_rate must be finite, got inf"),
    "dropout-nan": ({"lora_dropout": float("nan")}, ["--lora-dropout", "nan"], "lora_dropout must be in [0, 1)"),
    "budget-inf": ({"memory_budget_gb": float("inf")}, ["--memory-budget-gb", "inf"], "memory_budget_gb must be "
                                                                                          "finite"),
    "micro-2.5": ({"micro_batch": 2.5}, ["--micro-batch", "2.5"], "micro"),
    "micro-4.0": ({"micro_batch": 4.0}, ["--micro-batch", "4.0"], "micro"),
    "micro-0": ({"micro_batch": 0}, ["--micro-batch", "0"], "micro_batch must be an integer ≥ 1, got 0"),
    "accum-neg": ({"grad_accum": -1}, ["--grad-accum", "-1"], "grad_accum must be an integer ≥ 1, got -1"),
    "seed-neg": ({"seed": -1}, ["--seed", "-1"], "seed must be an integer ≥ 0, got -1"),
    "precision-case": ({"precision": "FP16"}, ["--precision", "FP16"], "precision must be one of"),
    "unknown-target": ({"lora_targets": ("q_proj", "qkv")}, ["--lora-targets", "q_proj,qkv"], "qkv"),
    "unknown-model": ({"model": "no-such-model"}, ["--model", "no-such-model"], "unknown model 'no-such-model'"),
    "heads-0": ({"num_attention_heads": 0}, None, "num_attention_heads must be a positive integer, got 0"),
    "hidden-null": ({"hidden_size": None}, None, "hidden_size must be a positive integer, got null"),
    "layers-neg": ({"num_hidden_layers": -4}, None, "num_hidden_layers must be a positive integer, got -4"),
    "heads-split-hidden": ({"hidden_size": 250}, None, "hidden_size 250 is not divisible by num_attention_heads 8"),
    "kv-split-heads": ({"num_key_value_heads": 3}, None, "num_key_value_heads 3 does not divide"),
    "unknown-activation": ({"hidden_act": "banana"}, None, 'hidden_act "banana" is not an activation'),
}


def _inputs(case, tmp_path):
    """The RunConfig fields and the flags for one SAME_ANSWER row; a config.json change is written to a file."""
    fields, argv, words = SAME_ANSWER[case]
    if argv is None:                                                   # a config.json change
        path = tmp_path / "config.json"
        path.write_text(json.dumps({**MODEL_JSON, **fields}))
        return {"model": str(path)}, ["--model", str(path)], words
    return fields, argv, words


def _one_error_line(capsys) -> str:
    captured = capsys.readouterr()
    assert captured.out == "" and "Traceback" not in captured.err
    assert captured.err.count("\n") == 1 and captured.err.startswith("labkit: error: "), captured.err
    return captured.err


@pytest.mark.parametrize("case", list(SAME_ANSWER))
def test_the_same_bad_input_gets_the_same_answer_in_python_and_on_the_command_line(case, tmp_path, capsys):
    from labkit import RunConfig, estimate
    fields, argv, words = _inputs(case, tmp_path)
    with pytest.raises(ValueError) as python:
        estimate(RunConfig(**fields))
    assert words in str(python.value) and "\n" not in str(python.value)
    for command in ("estimate", "run"):                  # a run refuses it before anything loads, like an estimate
        assert cli.main([command] + argv) == 2, command
        assert words in _one_error_line(capsys)


def test_a_malformed_config_is_one_line_in_a_fresh_process_too(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**MODEL_JSON, "num_attention_heads": 0}))
    p = labkit("run", "--model", str(path), "--steps", "1")
    assert p.returncode == 2 and p.stdout == "" and "Traceback" not in p.stderr
    assert p.stderr.count("\n") == 1 and "num_attention_heads must be a positive integer, got 0" in p.stderr


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="the refusal is for machines without CUDA")
def test_fp16_on_the_cpu_is_refused_by_run_and_the_command_line_as_by_the_lab(capsys):
    from labkit import RunConfig, run
    from labkit.config import FP16_ON_CPU
    with pytest.raises(ValueError, match="fp16 is not offered on the CPU"):
        run(RunConfig(precision="fp16"), steps=1, warmup=0)
    for command in ("run", "sweep", "search"):
        assert cli.main([command, "--precision", "fp16"]) == 2          # refused before a sweep writes anything
        assert FP16_ON_CPU in _one_error_line(capsys)
    assert cli.main(["estimate", "--precision", "fp16", "--json"]) == 0   # theory only: nothing runs on the CPU
    assert json.loads(capsys.readouterr().out)["resolved"]["precision"] == "fp16"


def test_hub_weights_for_a_model_without_them_is_bad_input(capsys):
    from labkit import RunConfig, run
    with pytest.raises(ValueError, match="weights='hub' asks for real weights, and model 'tiny' has none"):
        run(RunConfig(), weights="hub")
    assert cli.main(["run", "--weights", "hub"]) == 2
    assert "has none" in _one_error_line(capsys)


def test_advice_is_one_warning_line_each_and_the_run_goes_on(capsys):
    assert cli.main(["estimate", "--seq-len", "4096", "--lora-r", "512", "--json"]) == 0
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 2 and all(line.startswith("labkit: warning: ") for line in lines), captured.err
    assert "beyond the model's 2048 positions" in lines[0] and "lora_r 512 is above the rank" in lines[1]
    assert len(json.loads(captured.out)["warnings"]) == 2                  # and the record keeps them


def test_exercises_errors_are_labkit_lines(tmp_path, capsys):
    assert cli.main(["exercises", str(tmp_path / "no-such")]) == 2
    assert "source folder" in _one_error_line(capsys)
    assert cli.main(["exercises", "--check", str(tmp_path / "no-such")]) == 2
    assert "source folder" in _one_error_line(capsys)
    assert cli.main(["exercises", "a", "b", "c"]) == 2
    assert "unrecognized arguments: c" in _one_error_line(capsys)
    # out of date is a check that found a problem (exit 1), said on one labkit line
    assert cli.main(["exercises", "--check", os.path.join(REPO, "solutions"), str(tmp_path / "empty")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("labkit: out of date: ") and err.count("\n") == 1


@pytest.mark.parametrize("command", [[], ["run"], ["estimate"], ["exercises"]])
def test_help_documents_the_exit_codes(command, capsys):
    with pytest.raises(SystemExit) as done:
        cli.main(command + ["--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert "exit codes:" in out and "1  a run failed" in out and "2  bad input" in out


@pytest.mark.parametrize("argv, said", [
    (["search", "--micro-batch", "4"], "search finds the micro-batch: drop --micro-batch"),
    (["search", "--num-gpus", "2"], "search measures one process: drop --num-gpus"),
    (["estimate", "--lr", "-1e-4"], "learning_rate must be > 0, got -0.0001"),
    (["estimate", "--lora-alpha", "-.5"], "lora_alpha must be > 0"),
    (["estimate", "--seq-len", "1" + "0" * 400], "seq_len must be at most"),
    (["estimate", "--lr", "1e400"], "learning_rate must be finite"),
    (["sweep", "--plot", "", "--out", "x.jsonl"], "--plot is empty"),
    (["sweep", "--steps", "2", "--warmup", "2"], "--warmup 2 must be below --steps 2"),
])
def test_flags_that_were_ignored_or_misread_get_one_line(argv, said, tmp_path):
    p = labkit(*argv, cwd=tmp_path)
    assert p.returncode == 2 and p.stdout == "" and p.stderr.count("\n") == 1, p.stderr
    assert p.stderr.startswith("labkit: error: ") and said in p.stderr, p.stderr
    assert list(tmp_path.iterdir()) == []                  # refused before anything was written


def test_the_search_says_when_its_answer_is_only_the_ceiling_or_nothing_fits():
    from labkit.report.text import format_search
    ok = {"micro_batch": 1, "status": "ok", "saved_activation_bytes": 1, "peak_allocated_bytes": 2}
    ceiling = {"best": 4, "labels": ["cpu"], "trail": [ok, {**ok, "micro_batch": 2}, {**ok, "micro_batch": 4}]}
    assert "4 (the ceiling: nothing ran out of memory up to it; raise --max" in format_search(ceiling)
    wall = {**ceiling, "trail": ceiling["trail"] + [{**ok, "micro_batch": 8, "status": "oom"}]}
    assert "fits: 4   [" in format_search(wall)
    none = {"best": None, "labels": ["budget-simulated"], "trail": [{**ok, "status": "oom"}]}
    assert "none: even micro-batch 1 does not fit the memory budget" in format_search(none)


def test_file_names_that_are_not_utf8_are_refused_in_one_line(tmp_path):
    """A valid config.json whose name holds a byte no encoding reads (b'\\xff'): the kit would print it and write
    it into records, which fails mid-way under UTF-8 (PYTHONIOENCODING=utf-8); refused at once instead."""
    folder = os.fsencode(tmp_path)
    bad = folder + b"/mod\xffel.json"
    from labkit.shapes import PRESETS
    with open(bad, "w") as f:
        json.dump(PRESETS["tiny"].shape.to_hf_config().to_dict(), f)
    env = {**ENV, "PYTHONIOENCODING": "utf-8"}
    for argv in ([b"estimate", b"--model", bad], [b"sweep", b"--out", folder + b"/r\xff.jsonl"],
                 [b"sweep", b"--plot", folder + b"/c\xff.png"]):
        p = subprocess.run([sys.executable, "-m", "labkit", *argv], cwd=tmp_path, env=env, capture_output=True,
                           timeout=120)
        err = p.stderr.decode("utf-8")
        assert p.returncode == 2 and err.count("\n") == 1 and "is not valid UTF-8 text" in err, err
