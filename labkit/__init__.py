"""labkit: QLoRA Memory Lab's engine — real QLoRA steps, measured memory and time, and a theory beside them.

The stable API, what notebooks, exercises and your own scripts may rely on:

    import labkit
    cfg = labkit.RunConfig(model="tiny", micro_batch=2, grad_accum=4)   # 2 micro × 4 accum × 1 GPU = 8
    rec = labkit.run(cfg, steps=3)                 # real steps, measured, with the theory beside them
    labkit.estimate(cfg)                           # the theory alone: nothing is loaded
    labkit.sweep([cfg, cfg.replace(micro_batch=4)], "runs/sweep.jsonl")
    labkit.largest_micro_batch(cfg)                # grow until OOM, then bisect
    labkit.load_records("runs/sweep.jsonl")        # records the kit wrote, old ones included
    labkit.calibrate()                             # this machine's time constants (F, B, o), measured once, cached
    labkit.lab()                                   # the widget lab

Where things live (each layer imports only from the layers above it in this list):
    config, shapes, units        the knobs, the model shapes, number formatting
    theory                       bytes and FLOPs predicted from shapes alone (never imports engine/)
    engine/                      devices, models, data, measurement, the measured runs (never imports theory)
    experiment, search, sweeps   a run with its theory beside it; the largest micro-batch; grids of runs
    report/                      tables, deltas and charts made from records
    course/, checkers/           the widget lab and lesson helpers; the exercise checks
    cli, fresh                   the command line, and runs in a fresh process through it
"""
import importlib

__version__ = "0.1.0"

from labkit.config import RunConfig  # noqa: E402,F401

# name → (module, attribute): resolved on first use, so `import labkit` stays light (no torch until a run needs it)
_API = {
    "run": ("labkit.experiment", "run"),
    "estimate": ("labkit.experiment", "estimate"),
    "sweep": ("labkit.sweeps", "run_sweep"),
    "largest_micro_batch": ("labkit.search", "largest_micro_batch"),
    "load_records": ("labkit.sweeps", "load_records"),
    "lab": ("labkit.course.lab", "lab"),
    "calibrate": ("labkit.engine.calibrate", "calibrate"),
}
_MODULES = {"config", "shapes", "units", "theory", "engine", "experiment", "search", "sweeps", "report", "course",
            "checkers", "cli", "fresh"}


def __getattr__(name):
    if name in _API:
        module, attribute = _API[name]
        return getattr(importlib.import_module(module), attribute)
    if name in _MODULES:
        return importlib.import_module(f"labkit.{name}")
    raise AttributeError(f"module 'labkit' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_API) | _MODULES)
