"""Bad input, every entry point: the same mistake given to the Python API, the command line and the lab.

For each input the table shows what each door answers:

    API   the exception type and message (or what came back instead: a record and its status, the advice warned)
    CLI   `python -m labkit …` in a fresh process: exit code, then stderr's last line; "TRACEBACK" if Python's
          traceback reached the user, "+N lines" when stderr had more than one line
    lab   the panel's last message after `lab.run(**values)` (the real runner, one step of the tiny model)

The goal: a ValueError in Python, exit 2 with one `labkit: error: …` line on the command line, a message in the
panel; advice (a sequence beyond the model's positions, a rank above a layer's) as a warning, never a refusal. The
rows after the first table's came from a second battery (classes of input: numbers past a float, files that are
too deep, too big or not files, the wrong container, settings checked only after the work, lost work); the last
line counts the answers handled well.

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
    return [dict(name=n, api=a, cli=c, lab=l, expect="advise" if "(advice)" in n else "refuse")
            for n, a, c, l in rows] + class_cases(paths)


# ---- classes of input found by a second battery: each must be refused in one line, or accepted where noted --------
def class_cases(paths: dict[str, str]) -> list[dict]:
    import numpy as np

    from labkit import RunConfig, estimate, largest_micro_batch, load_records, run, sweep
    from labkit.checkers.build import build
    from labkit.course.lab import Lab
    from labkit.record import dumps, read_jsonl

    folder = Path(paths["heads0"]).parent
    small = RunConfig(seq_len=64, micro_batch=1, grad_accum=1)
    out = str(folder / "runs.jsonl")

    def config_json(name, text):
        path = folder / name
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        return str(path)

    fifo = str(folder / "pipe")
    os.mkfifo(fifo)
    nested = config_json("nested.json", "[" * 100_000)
    huge_vocab = config_json("vocab.json", json.dumps({**TINY, "vocab_size": 10 ** 400}))
    many_layers = config_json("layers.json", json.dumps({**TINY, "num_hidden_layers": 10 ** 6}))
    not_utf8 = config_json("latin1.json", json.dumps({**TINY, "_name_or_path": "modèle"},
                                                     ensure_ascii=False).encode("latin-1"))
    sol = folder / "solutions"
    sol.mkdir()
    (sol / "ex.ipynb").write_text(json.dumps({"cells": [{"cell_type": "code", "source": "### BEGIN SOLUTION\nx = 42\n"
                                                         "### END SOLUTION", "metadata": {}, "outputs": [],
                                                         "execution_count": None}],
                                              "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    answer = (sol / "ex.ipynb").read_text()

    def exercises_over_solutions():
        try:
            build(sol, sol)
        finally:
            if (sol / "ex.ipynb").read_text() != answer:
                raise AssertionError("the worked answer was overwritten by its stub")

    def users_last_line():
        path = folder / "mine.jsonl"
        note = "# my note: these ran on the second T4"
        path.write_text(dumps(estimate(RunConfig())) + "\n" + note)
        read_jsonl(path, repair=True)
        if note not in path.read_text():
            raise AssertionError("the user's own last line was cut")
        return "the user's line kept"

    def newer_record():
        path = folder / "newer.jsonl"
        path.write_text(json.dumps({**json.loads(dumps(estimate(RunConfig()))), "schema": 99}) + "\n")
        return f"{len(load_records(path))} records read"

    rows = [
        ("seed=2**64", lambda: RunConfig(seed=2 ** 64), ["estimate", "--seed", str(2 ** 64)], None, "refuse"),
        ("seq_len=10**400", lambda: RunConfig(seq_len=10 ** 400), ["estimate", "--seq-len", "1" + "0" * 400],
         None, "refuse"),
        ("learning_rate=10**400", lambda: RunConfig(learning_rate=10 ** 400), ["estimate", "--lr", "1e400"], None,
         "refuse"),
        ("memory_budget_gb=10**400", lambda: RunConfig(memory_budget_gb=10 ** 400), None,
         {"memory_budget_gb": 10 ** 400}, "refuse"),
        ("config.json vocab_size 10**400", lambda: estimate(RunConfig(model=huge_vocab)),
         ["estimate", "--model", huge_vocab], None, "refuse"),
        ("config.json num_hidden_layers 10**6", lambda: estimate(RunConfig(model=many_layers)),
         ["estimate", "--model", many_layers], None, "refuse"),
        ("config.json nested 100,000 deep", lambda: estimate(RunConfig(model=nested)),
         ["estimate", "--model", nested], None, "refuse"),
        ("config.json not UTF-8", lambda: estimate(RunConfig(model=not_utf8)), ["estimate", "--model", not_utf8],
         None, "refuse"),
        ("a named pipe as the model", lambda: estimate(RunConfig(model=fifo)), ["estimate", "--model", fifo], None,
         "refuse"),
        ("a named pipe as a records file", lambda: load_records(fifo), None, None, "refuse"),
        ("a named pipe as the sweep output", lambda: sweep([small], fifo), ["sweep", "--out", fifo], None,
         "refuse"),
        ("RunConfig.from_dict(None)", lambda: RunConfig.from_dict(None), None, None, "refuse"),
        ("RunConfig.from_dict('tiny')", lambda: RunConfig.from_dict("tiny"), None, None, "refuse"),
        ("RunConfig.from_dict([('model', 'tiny')])", lambda: RunConfig.from_dict([("model", "tiny")]), None, None,
         "refuse"),
        ("from_dict lora_targets='q_proj,v_proj'",
         lambda: RunConfig.from_dict({"lora_targets": "q_proj,v_proj"}).lora_targets, None, None, "accept"),
        ("sweep(cfg): one config", lambda: sweep(small, out), None, None, "refuse"),
        ("sweep([dict])", lambda: sweep([{"model": "tiny"}], out), None, None, "refuse"),
        ("sweep(steps=0)", lambda: sweep([small], out, steps=0), ["sweep", "--steps", "0", "--out", out], None,
         "refuse"),
        ("sweep(warmup=5)", lambda: sweep([small], out, warmup=5), ["sweep", "--warmup", "5", "--out", out], None,
         "refuse"),
        ("largest_micro_batch(dict)", lambda: largest_micro_batch({"model": "tiny"}), None, None, "refuse"),
        ("lab replay(records=5)", lambda: Lab(device="cpu").replay(records=5), None, None, "refuse"),
        ("gradient_checkpointing=numpy.bool_(False)",
         lambda: RunConfig(gradient_checkpointing=np.bool_(False)).gradient_checkpointing, None,
         {"gradient_checkpointing": np.bool_(False)}, "accept"),
        ("micro_batch=numpy.int64(2)", lambda: RunConfig(micro_batch=np.int64(2)).micro_batch, None,
         {"micro_batch": np.int64(2)}, "accept"),
        ("run(cfg, on_step=5)", lambda: run(small, on_step=5), None, None, "refuse"),
        ("Lab(steps=-1)", lambda: Lab(steps=-1), None, None, "refuse"),
        ("device='banana'", lambda: run(small, device="banana"), None, None, "refuse"),
        ("estimate(device='banana')", lambda: estimate(small, device="banana"), None, None, "refuse"),
        ("Lab(device='banana')", lambda: Lab(device="banana"), None, None, "refuse"),
        ("labkit search --micro-batch 4", None, ["search", "--micro-batch", "4"], None, "refuse"),
        ("labkit search --num-gpus 2", None, ["search", "--num-gpus", "2"], None, "refuse"),
        ("labkit estimate --lr -1e-4", None, ["estimate", "--lr", "-1e-4"], None, "refuse"),
        ("labkit sweep --plot ''", None, ["sweep", "--plot", "", "--out", out], None, "refuse"),
        ("labkit exercises SRC SRC", exercises_over_solutions, ["exercises", str(sol), str(sol)], None, "refuse"),
        ("a sweep file whose last line is the user's note", users_last_line, None, None, "accept"),
        ("a record of schema 99", newer_record, None, None, "accept"),
        ("a record of schema 99 (as_record)", lambda: __import__("labkit.record").record.as_record(
            {**json.loads(dumps(estimate(RunConfig()))), "schema": 99}), None, None, "refuse"),
    ]
    return [dict(name=n, api=a, cli=c, lab=l, expect=e) for n, a, c, l, e in rows]


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
    if isinstance(out, (str, bool, int, tuple)):         # what a case that must be accepted came back with
        return short(f"no error: {out!r}" + (f"; warns: {advice[0]}" if advice else ""))
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
        print("| # | input | expect | API | CLI | lab |\n|---|---|---|---|---|---|")
        tracebacks, answers, well = 0, 0, 0
        for i, row in enumerate(rows, 1):
            api = through_api(row["api"])
            cli = "skipped" if a.no_cli else through_cli(row["cli"])
            lab = "skipped" if a.no_lab else through_lab(row["lab"])
            tracebacks += "TRACEBACK" in cli
            for door, said in (("api", api), ("cli", cli), ("lab", lab)):
                if said in ("—", "skipped"):
                    continue
                answers += 1
                well += handled_well(door, said, row["expect"])
            print(f"| {i} | {short(row['name'], 60)} | {row['expect']} | {api} | {cli} | {lab} |", flush=True)
    print(f"\n{len(rows)} inputs, {answers} answers: {well} handled well; command-line answers with a traceback: "
          f"{tracebacks}")
    return 0


def handled_well(door: str, said: str, expect: str) -> bool:
    """A refusal: a ValueError (API), exit 2 with one line and no traceback (CLI), a message, not an exception,
    in the panel (lab). Advice: a warning, and the work done. An input to accept: no error."""
    if expect == "accept":
        return said.startswith("no error") or door == "lab" and not said.startswith("raised")
    if expect == "advise":                              # a warning that does not stop the run
        return ("warns:" in said if door == "api" else said.startswith("exit 0") if door == "cli"
                else not said.startswith("raised"))
    if door == "api":
        return said.startswith(("ValueError", "SweepFileBusy"))
    if door == "cli":
        return said.startswith("exit 2:") and "labkit: error:" in said
    return not said.startswith("raised") and said != "(no message)"


if __name__ == "__main__":
    sys.exit(main())
