"""RunConfig ↔ command-line flags: every RunConfig field as a flag with its help text, parsed strictly, and back.

    args = parser.parse_args(["run", "--micro-batch", "2", "--checkpointing", "off"])
    cfg = config_from_args(args)       # RunConfig(micro_batch=2, gradient_checkpointing=False, …)
    argv_for(cfg)                      # ["--micro-batch", "2", "--checkpointing", "off", …]: the way back

Sweeps take comma lists (`--micro-batch 1,2,4`); `configs_from_sweep_args` expands them into a grid. Bad input
raises UsageError with one sentence; the CLI prints it on one line and exits 2.
"""
from __future__ import annotations

import argparse
import dataclasses
import re

from labkit.config import RunConfig

PROG = "labkit"


class UsageError(Exception):
    """Bad command-line input: reported as one line, exit code 2."""


class Parser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # a negative number is a value, not a flag, in every form float() reads: -1, -.5, -1e-4 (argparse reads
        # "--lr -1e-4" as --lr missing its value); RunConfig then says why it is refused
        self._negative_number_matcher = re.compile(r"^-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$|^-(inf|nan)$", re.I)

    def error(self, message):   # argparse would print the usage block too; we want exactly one line
        raise UsageError(message)


def _int(text):
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{text!r} is not an integer") from None


def _float(text):
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a number") from None


def _number(text):   # lora_alpha: 32 stays an int, 0.5 a float
    value = _float(text)
    return int(value) if value.is_integer() and "." not in text else value


def _switch(text):
    words = {"on": True, "true": True, "yes": True, "1": True, "off": False, "false": False, "no": False, "0": False}
    if text.lower() not in words:
        raise ValueError(f"{text!r} is not on or off")
    return words[text.lower()]


def _targets(text):
    return tuple(t.strip() for t in text.split(",") if t.strip())


# field → (flag, parse one value, metavar). In `sweep` every flag takes a comma list of values (an axis);
# lora targets, being a comma list already, separate alternatives with "/": --lora-targets q_proj,v_proj/q_proj.
OPTIONS = {
    "model": ("--model", str, "PRESET|PATH"),
    "seq_len": ("--seq-len", _int, "N"),
    "micro_batch": ("--micro-batch", _int, "N"),
    "grad_accum": ("--grad-accum", _int, "N"),
    "num_gpus": ("--num-gpus", _int, "N"),
    "gradient_checkpointing": ("--checkpointing", _switch, "on|off"),
    "precision": ("--precision", str, "fp32|fp16|bf16|auto"),
    "quant": ("--quant", str, "nf4|none"),
    "lora_r": ("--lora-r", _int, "R"),
    "lora_alpha": ("--lora-alpha", _number, "ALPHA"),
    "lora_dropout": ("--lora-dropout", _float, "P"),
    "lora_targets": ("--lora-targets", _targets, "q_proj,k_proj,…"),
    "optim": ("--optim", str, "adamw|paged_adamw_8bit"),
    "learning_rate": ("--lr", _float, "LR"),
    "eval_micro_batch": ("--eval-micro-batch", _int, "N"),
    "pad_to_seq_len": ("--pad", _switch, "on|off"),
    "memory_budget_gb": ("--memory-budget-gb", _float, "GIB"),
    "seed": ("--seed", _int, "N"),
}
DEFAULT_AXES = {"gradient_checkpointing": [True, False], "micro_batch": [1, 2, 4]}


def add_config_options(p, sweep: bool):
    helps = {f.name: f.metadata.get("help", "") for f in dataclasses.fields(RunConfig)}
    defaults = RunConfig().to_dict()
    group = p.add_argument_group("run configuration" + (" (comma lists make sweep axes)" if sweep else ""))
    for field, (flag, _, metavar) in OPTIONS.items():
        default = defaults[field]
        shown = ",".join(default) if field == "lora_targets" else default
        text = f"{helps[field]} (default {shown})".replace("%", "%%")
        if field == "gradient_checkpointing":
            group.add_argument(flag, dest=field, nargs="?", const="on", metavar=metavar, help=text)
            group.add_argument("--no-checkpointing", dest=field, action="store_const", const="off",
                               help="same as --checkpointing off")
        else:
            group.add_argument(flag, dest=field, metavar=metavar, help=text)
    p.add_argument("--json", action="store_true", help="print each record as one JSON object per line")


def _values(field, raw, sweep):
    """Parse one option's text into its list of values; ValueError names the flag."""
    flag, parse, _ = OPTIONS[field]
    parts = raw.split("/") if field == "lora_targets" else raw.split(",")
    if not sweep:
        parts = [raw]
        if "," in raw and field not in ("lora_targets", "model"):
            raise ValueError(f"{flag} takes one value here ({raw!r}); use `labkit sweep` for a list")
    try:
        values = [parse(part.strip()) for part in parts]
    except ValueError as e:
        raise ValueError(f"{flag}: {e}") from None
    if not values or any(v in ("", ()) for v in values):
        raise ValueError(f"{flag}: empty value in {raw!r}")
    return values


def _given(args) -> dict:
    return {f: getattr(args, f) for f in OPTIONS if getattr(args, f, None) is not None}


def config_from_args(args) -> RunConfig:
    """One RunConfig from the options given; RunConfig's own checks raise ValueError for bad values."""
    changes = {f: _values(f, raw, sweep=False)[0] for f, raw in _given(args).items()}
    return RunConfig(**changes)


def _flag_text(field, value) -> str:
    if field == "gradient_checkpointing" or field == "pad_to_seq_len":
        return "on" if value else "off"
    if field == "lora_targets":
        return ",".join(value)
    return str(value)


def argv_for(cfg: RunConfig) -> list[str]:
    """The flags that make `labkit run` (or estimate, search) build exactly `cfg`: every field that differs from
    RunConfig's default, e.g. RunConfig(seq_len=512, pad_to_seq_len=False) → ["--seq-len", "512", "--pad", "off"].
    ValueError for a field the command line cannot set (prepare_kbit)."""
    defaults = RunConfig().to_dict()
    out = []
    for field, value in cfg.to_dict().items():
        if value == defaults[field]:
            continue
        if field not in OPTIONS:
            raise ValueError(f"{field}={value!r} cannot be given on the command line")
        out += [OPTIONS[field][0], _flag_text(field, value)]
    return out


def configs_from_sweep_args(args) -> list[RunConfig]:
    from labkit.sweeps import grid
    axes = {f: _values(f, raw, sweep=True) for f, raw in _given(args).items()}
    if all(len(v) == 1 for v in axes.values()):   # no axis given: the demo grid (2 × 3 = 6 runs on the tiny model)
        for field, values in DEFAULT_AXES.items():
            axes.setdefault(field, values)
    base = RunConfig(**{f: v[0] for f, v in axes.items() if len(v) == 1})
    return grid(base, {f: v for f, v in axes.items() if len(v) > 1})


def check_configs(configs, theory_only: bool = False) -> None:
    """Fail fast, before anything loads, with the checks `labkit.run` and the lab make: the model (unknown name,
    unreadable or malformed config.json) and the precision this device runs (bf16 where the GPU lacks it; fp16 on a
    CPU, unless `theory_only`: an estimate runs nothing). Under --t4-profile the GPU is judged as a T4."""
    from labkit.shapes import resolve_shape
    for cfg in configs:
        resolve_shape(cfg.model)
    from labkit.engine.device import run_precision        # imports torch
    from labkit.engine.hardware import device_facts
    facts = device_facts(check_hub=False)
    for cfg in configs:
        run_precision(cfg, facts, theory_only)
