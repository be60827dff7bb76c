"""Command line: `python -m labkit {doctor, estimate, run, sweep, search}` (console script `labkit`).

    labkit doctor                                   # what machine is this? (exit 0 always)
    labkit calibrate                                # this device's time constants (F, B, o), cached
    labkit estimate --model llama-3.1-8b --seq-len 2048 --micro-batch 4      # theory only, instant
    labkit run --model tiny --steps 3 --no-checkpointing                      # real steps, measured + theory
    labkit sweep --micro-batch 1,2,4 --checkpointing on,off --plot runs/sweep.png
    labkit search --seq-len 512 --memory-budget-gb 0.05                      # largest micro-batch that fits
    labkit run --t4-profile --model llama-3.2-1b --weights random --json     # a bigger GPU capped to a T4's memory
    labkit exercises [--check]                      # regenerate exercises/ from solutions/

`run`, `sweep`, `search` and `calibrate` take `--t4-profile`: the process is capped at a Colab T4's 14.75 GiB, less
the CUDA context a T4 pays out of them, before anything is allocated on the GPU, so a bigger GPU runs out of memory
where a T4 would (records say "t4-profile"), and 'auto' trains in a T4's fp16 (`calibrate` then measures that path,
cached apart from the GPU's own).

Bad input gives one line on stderr, "labkit: error: …", and exit code 2, whichever command and whichever check
found it (the same checks as `labkit.RunConfig`, `labkit.run` and the lab). Advice that does not stop a run is one
line each, "labkit: warning: …". A run that runs out of memory is a result (exit 0, status "oom"); a run that fails
for another reason exits 1, and so does a check that finds a problem (`doctor --check`, `exercises --check`).
"""
from __future__ import annotations

import argparse
import os
import functools
import json
import sys
import warnings

from labkit.flags import (PROG, Parser, UsageError, add_config_options, check_configs, config_from_args,
                          configs_from_sweep_args)
from labkit.report.text import format_record, format_search, format_sweep
from labkit.engine import notices


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
    from labkit.engine.calibrate import cached_calibration
    from labkit.report.calibration import format_calibration
    facts["time_constants"] = cached_calibration()        # what `labkit calibrate` measured here, or None
    print(json.dumps(facts, indent=2) if args.json else
          format_doctor(facts) + "\n" + format_calibration(facts["time_constants"]))
    return 0


def cmd_calibrate(args) -> int:
    """Measure this device's time constants (F, B, o) for the time theory; cached per device and versions."""
    from labkit.engine.calibrate import calibrate
    from labkit.report.calibration import format_calibration
    _apply_t4_profile(args)                # a T4's precision path (fp16) on a bigger GPU, cached apart from its own
    if not args.json:
        print("calibrating: matmuls, copies, a probe step (a few seconds) …", file=sys.stderr, flush=True)
    result = calibrate(force=args.force)
    print(json.dumps(result, indent=2) if args.json else format_calibration(result))
    return 0


def cmd_estimate(args) -> int:
    cfg = config_from_args(args)
    check_configs([cfg], theory_only=True)
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
    from labkit.sweeps import check_output_path, check_plot_path, run_sweep
    check_output_path(args.out, "--out")        # fail before the runs, not after them (ValueError → exit 2)
    if args.plot is None and not args.no_plot:  # the chart goes beside the records unless asked otherwise
        args.plot = os.path.splitext(args.out)[0] + ".png"
    if args.plot is not None:                   # --plot '' is a name left empty, not "no chart"
        check_plot_path(args.plot, "--plot")
    from labkit.experiment import run
    runner = functools.partial(run, weights=args.weights)
    records = run_sweep(configs, args.out, steps=args.steps, warmup=args.warmup, resume=not args.no_resume,
                        progress=True, runner=runner)
    _emit(records, args.json, _with_warmup_note(format_sweep))
    print(f"records in {args.out}", file=sys.stderr)
    if args.plot:
        from labkit.report.charts import sweep_chart
        sweep_chart(records, path=args.plot)
        print(f"chart written to {args.plot}", file=sys.stderr)
    return _exit_code(records)


def cmd_search(args) -> int:
    if args.micro_batch is not None:           # what the search finds: never taken and silently ignored
        raise UsageError("search finds the micro-batch: drop --micro-batch and bound the search with --min/--max")
    cfg = config_from_args(args)
    if cfg.num_gpus != 1:
        raise UsageError("search measures one process: drop --num-gpus (each rank holds one micro-batch, so the "
                         "largest that fits one process fits each rank)")
    if args.max < args.min:
        raise UsageError(f"--max {args.max} is below --min {args.min}")
    _apply_t4_profile(args)
    check_configs([cfg])
    from labkit.search import largest_micro_batch, stopped_text
    out = largest_micro_batch(cfg, lo=args.min, hi=args.max, weights=args.weights, on_error="return")
    if out["status"] == "error":                # a failure that is not an OOM: one line, the tries so far, exit 1
        if args.json:
            print(json.dumps(out))
        print(f"{PROG}: {stopped_text(out)}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(out))
        return 0
    print(format_search(out))
    return 0


def cmd_exercises(args) -> int:
    from labkit.checkers.build import build, out_of_date    # ValueError for a missing or unreadable source: exit 2
    if args.check:
        stale = out_of_date(args.src, args.dst)
        if stale:                                            # a check that found a problem: exit 1
            print(f"{PROG}: out of date: {', '.join(stale)} (run: labkit exercises {args.src} {args.dst})",
                  file=sys.stderr)
            return 1
        print(f"{args.dst} is up to date with {args.src}")
        return 0
    written = build(args.src, args.dst)
    print(f"wrote {len(written)} exercise notebook(s) to {args.dst}")
    return 0


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


EXIT_CODES = """exit codes:
  0  done (a run that runs out of memory is a result: status "oom", exit 0)
  1  a run failed for another reason (status "error"), or a --check found a problem
  2  bad input: one line "labkit: error: …" on stderr, nothing run"""


def build_parser() -> Parser:
    parser = Parser(prog=PROG, description="QLoRA Memory Lab: measured memory and time beside the theory.",
                    epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="{doctor,calibrate,estimate,run,sweep,search,exercises}",
                                parser_class=functools.partial(Parser, epilog=EXIT_CODES,
                                                               formatter_class=argparse.RawDescriptionHelpFormatter))

    p = sub.add_parser("doctor", help="what machine is this: GPU, bf16, memory, versions, hub")
    p.add_argument("--json", action="store_true", help="print the facts as JSON")
    p.add_argument("--check", action="store_true",
                   help="preflight for a workshop: READY / NOT READY, exit 0 when ready, 1 when not")
    p.set_defaults(func=cmd_doctor)

    p = sub.add_parser("calibrate", help="measure this device's time constants: matmul FLOP/s, copy bytes/s and "
                                         "seconds per op (a few seconds; cached per device and library versions)")
    p.add_argument("--force", action="store_true", help="measure again even if this device has cached constants")
    p.add_argument("--json", action="store_true", help="print the constants as JSON")
    _add_t4_profile(p)
    p.set_defaults(func=cmd_calibrate)

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
            p.add_argument("--plot", metavar="PNG", help="where the sweep chart goes (default: beside --out, "
                                                         "as .png)")
            p.add_argument("--no-plot", action="store_true", help="write no chart")
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


def _warnings_as_lines():
    """The kit's advice (LabkitWarning) as one line each on stderr, each said once: "labkit: warning: …";
    other warnings are shown as Python shows them."""
    from labkit.config import LabkitWarning
    said = set()
    python_shows = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if not issubclass(category, LabkitWarning):
            return python_shows(message, category, filename, lineno, file, line)
        text = _one_line(message)
        if text not in said:
            said.add(text)
            print(f"{PROG}: warning: {text}", file=sys.stderr, flush=True)

    warnings.simplefilter("always", LabkitWarning)
    warnings.showwarning = show


def main(argv=None) -> int:
    with warnings.catch_warnings(), notices.notes_to("stderr"):   # both put things back on the way out
        _warnings_as_lines()                    # stdout carries tables and JSON: calm notes go beside progress bars
        return _main(argv)


def _main(argv) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            raise UsageError("choose a command: doctor, calibrate, estimate, run, sweep, search or exercises "
                             "(labkit -h for help)")
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
