"""Small helpers the lesson notebooks share, so that each notebook shows the code worth learning and no plumbing.

    from labkit.course import lessons
    env = lessons.environment()          # device, default model, one line saying which
    lessons.table([("weights", "2.21 MiB")], header=("component", "bytes"))
    if lessons.gpu_only("CUDA memory statistics"): ...

These helpers set up, skip and lay out; they never judge. A lesson compares a figure with a claim in its own cell,
where the learner reads the two numbers, the arithmetic and the comparison (`inside = 2.5 <= ratio <= 3.3`).
Number formatting lives in `labkit.units` (`fmt_bytes`, `fmt_change`, `fmt_ratio`, `change`, `ratio`).
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass


def quiet() -> None:
    """Hide the library notices the kit has decided are noise (labkit.engine.notices.NOTICES) and the
    weight-loading progress bars (errors still show)."""
    from labkit.engine import notices
    notices.install()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        from transformers.utils import logging as hf_logging
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except Exception:  # noqa: BLE001 — quietness is a nicety, never a failure
        pass


@dataclass(frozen=True)
class Environment:
    device: str            # "cuda" or "cpu"
    on_gpu: bool
    model: str             # the preset lessons use by default here
    device_name: str
    capability: tuple | None
    in_colab: bool

    @property
    def precision(self) -> str:
        """What precision 'auto' trains in here, decided from the compute capability: fp16 on a T4 (7.5), bf16
        from 8.0 (Ampere), fp32 on a CPU (and fp16 in the tests' T4 rehearsal, which gives the CPU a T4's 7.5)."""
        from labkit.config import resolve_precision
        return resolve_precision("auto", "cuda" if self.capability else "cpu", self.capability)

    @property
    def stand_in(self) -> bool:
        """True when the numbers come from the tiny CPU stand-in rather than the real model on a GPU."""
        return not self.on_gpu

    def where(self) -> str:
        if self.on_gpu:
            return f"the {self.model} model on {self.device_name}"
        return "the tiny stand-in model on the CPU"


def show_figures() -> bool:
    """Make a cell that ends with a chart (a `matplotlib.figure.Figure`, what `labkit.report.charts` returns) show it
    as a picture. Jupyter draws figures inline only once pyplot has set up its inline backend, which the kit never
    does (it draws without pyplot), so without this a chart shows as '<Figure size 700x750 with 2 Axes>'.
    Registers a PNG formatter with IPython; returns False outside IPython (a script: nothing to do)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    if shell is None:
        return False
    from matplotlib.figure import Figure

    from labkit.report.charts import figure_png
    shell.display_formatter.formatters["image/png"].for_type(Figure, figure_png)
    return True


def environment(verbose: bool = True) -> Environment:
    """Which device the lessons run on and which model they use: 'llama-3.2-1b' on a GPU, 'tiny' on the CPU. Also
    quiets the known notices and lets charts show inline (`show_figures`)."""
    quiet()
    show_figures()
    import torch

    from labkit.engine.hardware import t4_profile_active, t4_rehearsal_active
    on_gpu = torch.cuda.is_available()
    rehearsal = not on_gpu and t4_rehearsal_active()
    profiled = on_gpu and t4_profile_active()
    if profiled:                    # a bigger GPU capped to a T4's memory: runs take a T4's precision (fp16) too
        props = torch.cuda.get_device_properties(0)
        env = Environment("cuda", True, "llama-3.2-1b", f"{props.name} in T4 profile", (7, 5),
                          "google.colab" in sys.modules)
    elif on_gpu:
        props = torch.cuda.get_device_properties(0)
        env = Environment("cuda", True, "llama-3.2-1b", props.name, (props.major, props.minor),
                          "google.colab" in sys.modules)
    elif rehearsal:                 # the tests' T4 rehearsal: a T4's capability on the CPU, never offered to learners
        env = Environment("cpu", False, "tiny", "CPU rehearsing a Tesla T4", (7, 5), "google.colab" in sys.modules)
    else:
        env = Environment("cpu", False, "tiny", "CPU", None, "google.colab" in sys.modules)
    if verbose and rehearsal:
        print("T4 rehearsal on the CPU (a test of the kit): runs take a T4's fp16 path on the 'tiny' stand-in and "
              "are labelled 't4-rehearsal'; no figure here is a T4's.")
    elif verbose:
        if profiled:
            print(f"GPU: {env.device_name}: capped at a T4's memory and trained in a T4's precision (fp16), so runs "
                  f"run out of memory where a T4 would; their times are this GPU's, not a T4's. Lessons use the "
                  f"'{env.model}' model; records are labelled 't4-profile'.")
        elif on_gpu:
            print(f"GPU: {env.device_name} (compute capability {'.'.join(map(str, env.capability))}) → lessons use "
                  f"the '{env.model}' model.")
        else:
            print("No GPU: lessons run on the CPU with the 'tiny' stand-in model (4 layers, random weights). Its "
                  "memory figures are real measurements of that stand-in, labelled 'cpu' and 'shape-only'.")
    return env


def gpu_only(what: str) -> bool:
    """True on a GPU. On a CPU, print one line saying what is skipped and return False."""
    import torch
    if torch.cuda.is_available():
        return True
    print(f"Skipped on this machine (no GPU): {what}.")
    return False


def table_text(rows, header=None) -> str:
    """A plain-text table (monospace) from a list of rows: first column left-aligned, the others right-aligned."""
    rows = [[str(c) for c in r] for r in rows]
    if header:
        rows = [[str(h) for h in header]] + rows
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for n, r in enumerate(rows):
        lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
        if header and n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def table(rows, header=None) -> None:
    """Print `table_text(rows, header)`."""
    print(table_text(rows, header))
