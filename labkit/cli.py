"""Command line: `python -m labkit {doctor, estimate, run, sweep, search}` (console script `labkit`).

    labkit doctor                                   # what machine is this? (exit 0 always)
    labkit estimate --model llama-3.1-8b --seq-len 2048 --micro-batch 4      # theory only, instant
    labkit run --model tiny --steps 3 --no-checkpointing                      # real steps, measured + theory
    labkit sweep --micro-batch 1,2,4 --checkpointing on,off --plot runs/sweep.png
    labkit search --seq-len 512 --memory-budget-gb 0.05                      # largest micro-batch that fits
    labkit run --t4-profile --model llama-3.2-1b --weights random --json     # a bigger GPU capped to a T4's memory
    labkit exercises [--check]                      # regenerate exercises/ from solutions/

`run`, `sweep` and `search` take `--t4-profile`: the process is capped at a Colab T4's 14.75 GiB before anything
is allocated on the GPU, so a bigger GPU runs out of memory where a T4 would (records say "t4-profile").

Bad input gives one line on stderr, "labkit: error: …", and exit code 2. A run that runs out of memory is a
result (exit 0, status "oom"); a run that fails for another reason exits 1.
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import sys

from labkit.config import RunConfig
from labkit.report.text import format_record, format_search, format_sweep

PROG = "labkit"


class UsageError(Exception):
    """Bad command-line input: reported as one line, exit code 2."""


class Parser(argparse.ArgumentParser):
    def error(self, message):   # argparse would print the usage block too; we want exactly one line
        raise UsageError(message)


# ---- RunConfig options --------------------------------------------------------------------------------------------
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


def check_configs(configs) -> None:
    """Fail fast, before anything loads: unknown model / unreadable config, bf16 where the GPU lacks it."""
    from labkit.config import resolve_precision
    from labkit.shapes import resolve_shape
    for cfg in configs:
        resolve_shape(cfg.model)
    from labkit.engine.hardware import device_facts, t4_profile_active   # imports torch
    facts = device_facts(check_hub=False)
    cap = tuple(facts["capability"]) if facts["capability"] else None
    if facts["type"] == "cuda" and t4_profile_active():
        cap = (7, 5)                        # under --t4-profile the run behaves as a T4: bf16 is refused there too
    for cfg in configs:
        resolve_precision(cfg.precision, facts["type"], cap)


# ---- commands ------------------------------------------------------------------------------------------------------
def _exit_code(records) -> int:
    return 1 if any(r.get("status") == "error" for r in records) else 0   # an OOM is a result, not a failure


def _emit(records, as_json: bool, table) -> None:
    from labkit.record import dumps as record_json
    if as_json:
        for r in records:
            print(record_json(r), flush=True)
    else:
        print(table(records))


def cmd_doctor(args) -> int:
    from labkit.engine.hardware import device_facts, format_doctor
    try:
        facts = device_facts()
    except Exception as e:  # noqa: BLE001 — the doctor reports, it never fails
        print(json.dumps({"error": str(e)}) if args.json else f"labkit doctor could not read the device: {e}")
        return 0
    if args.check:                 # the instructor's preflight: one line per check, exit 0 ready / 1 not ready
        from labkit.engine.hardware import preflight
        ready, lines = preflight(facts)
        print(json.dumps({"ready": ready, "checks": lines}) if args.json else "\n".join(lines))
        return 0 if ready else 1
    print(json.dumps(facts, indent=2) if args.json else format_doctor(facts))
    return 0


def cmd_estimate(args) -> int:
    cfg = config_from_args(args)
    check_configs([cfg])
    from labkit.experiment import estimate   # imports torch: only once the input is known to be good
    record = estimate(cfg)
    _emit([record], args.json, lambda rs: format_record(rs[0]))
    return _exit_code([record])


def _check_steps(args) -> None:
    """Settle the warm-up: given, it must leave a step to time; not given, one step, or none when --steps is 1
    (min(1, steps − 1)): the runner then labels the record "time-includes-warmup"."""
    if args.warmup is None:
        args.warmup = min(1, args.steps - 1)
    elif args.warmup >= args.steps:
        raise UsageError(f"--warmup {args.warmup} must be below --steps {args.steps}: nothing would be timed")


WARMUP_NOTE = ("note: no warm-up step, so the step time includes the first step's one-off costs (kernels loaded and "
               "chosen, memory allocated for the first time, optimizer states created); use --steps 2 or more for a "
               "steady-state time")


def _with_warmup_note(table):
    def text(records):
        out = table(records)
        if any("time-includes-warmup" in (r.get("labels") or []) for r in records):
            out += "\n" + WARMUP_NOTE
        return out
    return text


def _apply_t4_profile(args) -> None:
    """--t4-profile: cap this process at a T4's 14.75 GiB before anything is allocated on the GPU. Without CUDA
    it is bad input (there is no GPU memory to cap), refused before any work."""
    if not getattr(args, "t4_profile", False):
        return
    import torch
    if not torch.cuda.is_available():
        raise UsageError("--t4-profile needs a CUDA GPU: it caps GPU memory at a T4's 14.75 GiB, and torch sees "
                         "no GPU here (drop the flag to run on the CPU)")
    from labkit.engine.hardware import t4_profile
    t4_profile()


def cmd_run(args) -> int:
    cfg = config_from_args(args)
    _check_steps(args)
    _apply_t4_profile(args)
    check_configs([cfg])
    from labkit.experiment import run   # imports torch: only once the input is known to be good
    record = run(cfg, steps=args.steps, warmup=args.warmup, weights=args.weights, progress=not args.json)
    _emit([record], args.json, _with_warmup_note(lambda rs: format_record(rs[0])))
    return _exit_code([record])


def cmd_sweep(args) -> int:
    configs = configs_from_sweep_args(args)
    _check_steps(args)
    _apply_t4_profile(args)
    check_configs(configs)
    for path in (args.out, args.plot):          # fail before the runs, not after them
        folder = os.path.dirname(os.path.abspath(path)) if path else None
        if folder and path == args.out:
            os.makedirs(folder, exist_ok=True)
        elif folder and not os.path.isdir(folder):
            raise UsageError(f"--plot {path}: folder {folder} does not exist")
    from labkit.experiment import run
    from labkit.sweeps import run_sweep
    runner = functools.partial(run, weights=args.weights)
    records = run_sweep(configs, args.out, steps=args.steps, warmup=args.warmup, resume=not args.no_resume,
                        progress=True, runner=runner)
    _emit(records, args.json, _with_warmup_note(format_sweep))
    if args.plot:
        from labkit.report.charts import sweep_chart
        sweep_chart(records, path=args.plot)
        print(f"chart written to {args.plot}", file=sys.stderr)
    return _exit_code(records)


def cmd_search(args) -> int:
    cfg = config_from_args(args)
    if args.max < args.min:
        raise UsageError(f"--max {args.max} is below --min {args.min}")
    _apply_t4_profile(args)
    check_configs([cfg])
    from labkit.search import largest_micro_batch
    out = largest_micro_batch(cfg, lo=args.min, hi=args.max, weights=args.weights)
    if args.json:
        print(json.dumps(out))
        return 0
    print(format_search(out))
    return 0


def cmd_exercises(args) -> int:
    from labkit.checkers.build import main as build_main
    return build_main([args.src, args.dst] + (["--check"] if args.check else []))


def _count(name, minimum):
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{name} must be ≥ {minimum}, got {value}")
        return value
    return parse


def _add_t4_profile(p) -> None:
    p.add_argument("--t4-profile", action="store_true",
                   help="CUDA only: cap this process at a Colab T4's 14.75 GiB before anything is allocated, so a "
                        "bigger GPU runs out of memory where a T4 would; precision auto then means fp16, "
                        "bf16 is refused, and records are labelled t4-profile (refused without a GPU)")


def build_parser() -> Parser:
    parser = Parser(prog=PROG, description="QLoRA Memory Lab: measured memory and time beside the theory.")
    sub = parser.add_subparsers(dest="command", metavar="{doctor,estimate,run,sweep,search,exercises}")

    p = sub.add_parser("doctor", help="what machine is this: GPU, bf16, memory, versions, hub")
    p.add_argument("--json", action="store_true", help="print the facts as JSON")
    p.add_argument("--check", action="store_true",
                   help="preflight for a workshop: READY / NOT READY, exit 0 when ready, 1 when not")
    p.set_defaults(func=cmd_doctor)

    p = sub.add_parser("estimate", help="theory only: predicted memory and FLOPs, nothing is loaded")
    add_config_options(p, sweep=False)
    p.set_defaults(func=cmd_estimate)

    for name, helptext in (("run", "real QLoRA steps, measured, with the theory beside them"),
                           ("sweep", "run a grid of configs (comma lists), saving each record as it finishes")):
        p = sub.add_parser(name, help=helptext)
        add_config_options(p, sweep=(name == "sweep"))
        p.add_argument("--steps", type=_count("--steps", 1), default=3, help="measured optimizer steps (default 3)")
        p.add_argument("--warmup", type=_count("--warmup", 0), default=None,
                       help="unmeasured optimizer steps first (default 1; 0 when --steps is 1, and then the time "
                            "includes the first step's one-off costs)")
        p.add_argument("--weights", choices=("auto", "hub", "random"), default="auto",
                       help="auto: hub weights when reachable, else shape-only random init (default auto)")
        _add_t4_profile(p)
        if name == "sweep":
            p.add_argument("--out", default="runs/sweep.jsonl", help="JSON Lines results file (default %(default)s)")
            p.add_argument("--plot", metavar="PNG", help="also write the sweep chart here")
            p.add_argument("--no-resume", action="store_true", help="rerun configs already in --out (appends)")
        p.set_defaults(func={"run": cmd_run, "sweep": cmd_sweep}[name])

    p = sub.add_parser("search", help="largest micro-batch that fits: double, then bisect, surviving each OOM")
    add_config_options(p, sweep=False)
    p.add_argument("--min", type=_count("--min", 1), default=1, help="first micro-batch to try (default 1)")
    p.add_argument("--max", type=_count("--max", 1), default=64, help="ceiling (default 64)")
    p.add_argument("--weights", choices=("auto", "hub", "random"), default="auto",
                   help="auto: hub weights when reachable, else shape-only random init (default auto)")
    _add_t4_profile(p)
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("exercises", help="generate exercises/ from solutions/ (stubs replace the solutions)")
    p.add_argument("src", nargs="?", default="solutions", help="solution notebooks (default solutions)")
    p.add_argument("dst", nargs="?", default="exercises", help="where the exercises go (default exercises)")
    p.add_argument("--check", action="store_true", help="write nothing; exit 1 if the exercises are out of date")
    p.set_defaults(func=cmd_exercises)
    return parser


def _one_line(message) -> str:
    return " ".join(str(message).split())


def main(argv=None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            raise UsageError("choose a command: doctor, estimate, run, sweep or search (labkit -h for help)")
        return args.func(args)
    except (UsageError, ValueError) as e:
        print(f"{PROG}: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except OSError as e:        # unwritable --out, unreadable files, a hub that cannot be reached
        print(f"{PROG}: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:   # `labkit sweep --json | head`
        return 0


if __name__ == "__main__":
    sys.exit(main())
