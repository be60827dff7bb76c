"""Bad input, every entry point: the same mistake given to the Python API, the command line and the lab.

For each input the table shows what each door answers:

    API   the exception type and message (or what came back instead: a record and its status, the advice warned)
    CLI   `python -m labkit …` in a fresh process: exit code, then stderr's last line; "TRACEBACK" if Python's
          traceback reached the user, "+N lines" when stderr had more than one line
    lab   the panel's last message after `lab.run(**values)` (the real runner, one step of the tiny model)

The goal: a ValueError in Python, exit 2 with one `labkit: error: …` line on the command line, a message in the
panel; advice (a sequence beyond the model's positions, a rank above a layer's) as a warning, never a refusal.

    python benchmarks/bad_inputs.py             # the table, as Markdown (a few minutes: each CLI row starts Python)
    python benchmarks/bad_inputs.py --no-cli    # API and lab only (seconds)
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "LABKIT_OFFLINE": "1", "MPLBACKEND": "Agg", "PYTHONPATH": str(REPO)}
WIDTH = 150                                     # characters of a message shown in a cell

# ---- malformed config.json files ---------------------------------------------------------------------------------
TINY = {"model_type": "llama", "hidden_size": 256, "intermediate_size": 688, "num_hidden_layers": 2,
        "num_attention_heads": 8, "num_key_value_heads": 4, "vocab_size": 384, "max_position_embeddings": 2048,
        "hidden_act": "silu", "tie_word_embeddings": False}
MALFORMED = {
    "heads0": {"num_attention_heads": 0},
    "hidden_null": {"hidden_size": None},
    "layers_neg": {"num_hidden_layers": -4},
    "hidden_250": {"hidden_size": 250},                   # 250 / 8 heads is not whole
    "kv3": {"num_key_value_heads": 3},                    # 3 does not divide 8
    "act_banana": {"hidden_act": "banana"},
    "hidden_float": {"hidden_size": 256.0},
}


def write_configs(folder: Path) -> dict[str, str]:
    paths = {}
    for name, change in MALFORMED.items():
        path = folder / f"{name}.json"
        path.write_text(json.dumps({**TINY, **change}))
        paths[name] = str(path)
    return paths


# ---- the inputs ---------------------------------------------------------------------------------------------------
def cases(paths: dict[str, str]) -> list[dict]:
    """name, api (a callable), cli (argv or None), lab (values for lab.run, or a model path under "model")."""
    from labkit import RunConfig, estimate, run

    small = dict(seq_len=64, micro_batch=1, grad_accum=1)
    rows = [
        ("gradient_checkpointing='off'", lambda: RunConfig(gradient_checkpointing="off"),
         ["estimate", "--checkpointing", "maybe"], {"gradient_checkpointing": "off"}),
        ("pad_to_seq_len='false'", lambda: RunConfig(pad_to_seq_len="false"), ["estimate", "--pad", "nah"], None),
        ("prepare_kbit=1", lambda: RunConfig(prepare_kbit=1), None, None),
        ("lora_alpha=nan", lambda: RunConfig(lora_alpha=float("nan")), ["estimate", "--lora-alpha", "nan"], None),
        ("lora_alpha=inf", lambda: RunConfig(lora_alpha=float("inf")), ["estimate", "--lora-alpha", "inf"], None),
        ("learning_rate=nan", lambda: RunConfig(learning_rate=float("nan")), ["estimate", "--lr", "nan"], None),
        ("learning_rate=inf", lambda: RunConfig(learning_rate=float("inf")), ["estimate", "--lr", "inf"], None),
        ("lora_dropout=nan", lambda: RunConfig(lora_dropout=float("nan")), ["estimate", "--lora-dropout", "nan"],
         None),
        ("memory_budget_gb=inf", lambda: RunConfig(memory_budget_gb=float("inf")),
         ["estimate", "--memory-budget-gb", "inf"], {"memory_budget_gb": float("inf")}),
        ("micro_batch=2.5", lambda: RunConfig(micro_batch=2.5), ["estimate", "--micro-batch", "2.5"],
         {"micro_batch": 2.5}),
        ("micro_batch=4.0", lambda: RunConfig(micro_batch=4.0), ["estimate", "--micro-batch", "4.0"],
         {"micro_batch": 4.0}),
        ("lora_r=True", lambda: RunConfig(lora_r=True), None, {"lora_r": True}),
        ("micro_batch=0", lambda: RunConfig(micro_batch=0), ["estimate", "--micro-batch", "0"], {"micro_batch": 0}),
        ("grad_accum=-1", lambda: RunConfig(grad_accum=-1), ["estimate", "--grad-accum", "-1"], None),
        ("seed=-1", lambda: RunConfig(seed=-1), ["estimate", "--seed", "-1"], None),
        ("precision='FP16'", lambda: RunConfig(precision="FP16"), ["estimate", "--precision", "FP16"],
         {"precision": "FP16"}),
        ("lora_targets=('q_proj','qkv')", lambda: RunConfig(lora_targets=("q_proj", "qkv")),
         ["estimate", "--lora-targets", "q_proj,qkv"], None),
        ("lora_targets=5", lambda: RunConfig(lora_targets=5), None, None),
        ("run(cfg, steps='3')", lambda: run(RunConfig(**small), steps="3"), ["run", "--steps", "3.0"], None),
        ("run(cfg, steps=0)", lambda: run(RunConfig(**small), steps=0), ["run", "--steps", "0"], None),
        ("estimate(a dict)", lambda: estimate({"model": "tiny"}), None, None),
        ("model='no-such-model'", lambda: estimate(RunConfig(model="no-such-model")),
         ["estimate", "--model", "no-such-model"], {"model": "no-such-model"}),
    ]
    for name, path in paths.items():
        change = ", ".join(f"{k}: {json.dumps(v)}" for k, v in MALFORMED[name].items())
        rows.append((f"config.json {change} (estimate)", lambda p=path: estimate(RunConfig(model=p)),
                     ["estimate", "--model", path], {"model": path}))
    rows += [
        ("config.json num_attention_heads: 0 (run)", lambda: run(RunConfig(model=paths["heads0"], **small),
                                                                  steps=1, warmup=0),
         ["run", "--model", paths["heads0"], "--steps", "1", "--seq-len", "64", "--micro-batch", "1",
          "--grad-accum", "1"], None),
        ("seq_len=4096 > tiny's 2048 positions (advice)", lambda: estimate(RunConfig(seq_len=4096)),
         ["estimate", "--seq-len", "4096"], {"seq_len": 4096}),
        ("lora_r=512 > hidden 256 (advice)", lambda: estimate(RunConfig(lora_r=512)),
         ["estimate", "--lora-r", "512"], {"lora_r": 512}),
        ("precision='fp16' on the CPU (run)", lambda: run(RunConfig(precision="fp16", **small), steps=1, warmup=0),
         ["run", "--precision", "fp16", "--steps", "1", "--seq-len", "64", "--micro-batch", "1", "--grad-accum", "1"],
         {"precision": "fp16"}),
        ("weights='hub' for the tiny stand-in", lambda: run(RunConfig(**small), steps=1, warmup=0, weights="hub"),
         ["run", "--weights", "hub", "--steps", "1", "--seq-len", "64", "--micro-batch", "1", "--grad-accum", "1"],
         None),
        ("labkit exercises /no/such", None, ["exercises", "/no/such"], None),
        ("labkit exercises --check /no/such", None, ["exercises", "--check", "/no/such"], None),
        ("labkit exercises a b c", None, ["exercises", "a", "b", "c"], None),
        ("labkit estimate --no-such-flag", None, ["estimate", "--no-such-flag"], None),
        ("labkit (no command)", None, [], None),
    ]
    return [dict(name=n, api=a, cli=c, lab=l) for n, a, c, l in rows]


# ---- the three doors -------------------------------------------------------------------------------------------------
def short(text, width=WIDTH) -> str:
    text = " ".join(str(text).split()).replace("|", "\\|")
    return text if len(text) <= width else text[:width - 1] + "…"


def through_api(call) -> str:
    if call is None:
        return "—"
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        try:
            out = call()
        except Exception as e:  # noqa: BLE001 — the point is to see which exception each input gives
            return short(f"{type(e).__name__}: {e}")
    advice = [str(w.message) for w in seen if w.category.__name__ == "LabkitWarning"]
    try:                                                 # a record (RunRecord reads like a dict)
        status, error = out["status"], out["error"]
        head = f"no error: a record, status {status}" + (f" ({error})" if error else "")
    except (TypeError, KeyError):
        head = f"no error: {type(out).__name__} built"
    return short(head + (f"; warns: {advice[0]}" if advice else ""))


def through_cli(argv) -> str:
    if argv is None:
        return "—"
    p = subprocess.run([sys.executable, "-m", "labkit", *argv], cwd=REPO, env=ENV, capture_output=True, text=True,
                       timeout=600)
    lines = [line for line in p.stderr.splitlines() if line.strip()]
    flags = (" TRACEBACK" if "Traceback" in p.stderr else "") + (f" +{len(lines) - 1} lines" if len(lines) > 1
                                                                 else "")
    return short(f"exit {p.returncode}{flags}: {lines[-1] if lines else '(stderr empty)'}")


def through_lab(values) -> str:
    if values is None:
        return "—"
    from labkit.course.lab import Lab
    values = dict(values)
    model = values.pop("model", "tiny")
    try:
        lab = Lab(model=model, device="cpu", steps=1, warmup=0, weights="random")
        lab.set(seq_len=64) if not values.get("seq_len") else None
        lab.run(**values)
    except Exception as e:  # noqa: BLE001
        return short(f"raised {type(e).__name__}: {e}")
    return short(lab.messages[-1] if lab.messages else "(no message)")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--no-cli", action="store_true", help="skip the command-line column (each row starts Python)")
    ap.add_argument("--no-lab", action="store_true", help="skip the lab column")
    a = ap.parse_args(argv)
    os.environ.update(HF_HUB_OFFLINE="1", LABKIT_OFFLINE="1")
    with tempfile.TemporaryDirectory() as tmp:
        rows = cases(write_configs(Path(tmp)))
        print("| # | input | API | CLI | lab |\n|---|---|---|---|---|")
        tracebacks = 0
        for i, row in enumerate(rows, 1):
            cli = "skipped" if a.no_cli else through_cli(row["cli"])
            lab = "skipped" if a.no_lab else through_lab(row["lab"])
            tracebacks += "TRACEBACK" in cli
            print(f"| {i} | {short(row['name'], 60)} | {through_api(row['api'])} | {cli} | {lab} |", flush=True)
    print(f"\n{len(rows)} inputs; command-line answers with a traceback: {tracebacks}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
