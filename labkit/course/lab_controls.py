"""The lab's controls: which values each setting offers, the widgets that offer them, and reading and setting them.

Live runs offer what this device runs (precision: only its native formats, each missing one named with the
reason); a reference set offers only what it recorded. `checked_values` refuses, in words, a value a control does
not offer, before anything is changed. Widgets only: nothing here runs or draws.
"""
from __future__ import annotations

import ipywidgets as W

from labkit.config import RunConfig, is_finite, native_bf16, plain, resolve_precision
from labkit.report.reference import MATCHED_FIELDS, closest_record, recorded_precisions, recorded_values

LIVE = "live runs in this kernel"     # the "results from" choice that runs in this kernel instead of replaying
BUDGET = "memory_budget_gb"           # the CPU's budget control: a text box, empty for no budget


def style() -> dict:
    """Labels 130 px wide: the longest, "grad accumulation", is ~115 px at the widgets' 13 px font."""
    return {"description_width": "130px"}


def wide() -> W.Layout:
    """A control that shares a wrapping row with others: 260 px or more, growing to fill the row, never wider than
    the panel. Two fit side by side in a 600 px column, three in a 900 px one, one per line below 520 px."""
    return W.Layout(width="auto", flex="1 1 260px", min_width="240px", max_width="100%")


# ---- precision: only what the device runs natively -------------------------------------------------------------------
def cpu_bf16_instructions() -> bool | None:
    """Does this CPU have bf16 instructions (avx512_bf16 / amx_bf16)? None where /proc/cpuinfo is unreadable."""
    try:
        with open("/proc/cpuinfo") as fh:
            flags = fh.read()
    except OSError:
        return None
    return "avx512_bf16" in flags or "amx_bf16" in flags


def precision_choices(device_type: str, capability=None) -> tuple[list[tuple[str, str]], list[str]]:
    """The precision dropdown for a device: ([(label, value), ...], [why each missing format is missing]).

    CUDA ≥ 8.0 (Ampere and later): bf16, fp16, fp32. Older CUDA (a T4 is 7.5): fp16 and fp32; bf16 is left out
    because it has no bf16 tensor cores, even if `torch.cuda.is_bf16_supported()` says True (emulation).
    CPU: fp32 and bf16 (to see the memory effect); fp16 is left out, its loss-scaled path is a GPU habit.
    """
    cap = tuple(capability) if capability else None
    auto = resolve_precision("auto", device_type, cap)
    if device_type == "cuda":
        cc = ".".join(map(str, cap)) if cap else "?"
        if native_bf16(cap):
            return [(f"auto ({auto})", "auto"), ("bf16", "bf16"), ("fp16", "fp16"), ("fp32", "fp32")], []
        return ([(f"auto ({auto})", "auto"), ("fp16", "fp16"), ("fp32", "fp32")],
                [f"bf16 is not offered: compute capability {cc} < 8.0 has no bf16 tensor cores "
                 "(torch.cuda.is_bf16_supported() may still answer True: that is slow emulation); train in fp16 "
                 "with loss scaling"])
    has = cpu_bf16_instructions()
    bf16_note = ("bf16 on this CPU: it has bf16 instructions, but the 4-bit path is not faster than fp32 here"
                 if has else "bf16 on this CPU: no bf16 instructions, so it is emulated and slower than fp32; "
                 "choose it to see the memory effect, not the speed")
    return ([(f"auto ({auto})", "auto"), ("fp32", "fp32"), ("bf16", "bf16")],
            [bf16_note, "fp16 is not offered on the CPU: fp16 with loss scaling is a GPU recipe (lesson 04 "
                        "shows the scaling by hand)"])


# ---- the two sets of controls ----------------------------------------------------------------------------------------
def live_controls(b: RunConfig, on_gpu: bool, precision_options, gpus_visible: int = 0) -> dict:
    """The controls for runs in this kernel, starting from `b`: every value this device can run (on a CPU also a
    memory budget, over which a run becomes a simulated OOM). With 2 or more GPUs visible the GPU control offers
    1 … that many, and a run uses them (one DDP process each); otherwise it is arithmetic and says so."""
    values = [v for _, v in precision_options]
    seq_options = sorted({64, 128, 256, 512, 1024} | ({2048, 4096} if on_gpu else set()) | {b.seq_len})
    r_options = sorted({4, 8, 16, 32, 64} | {b.lora_r})
    controls = {
        "gradient_checkpointing": W.Checkbox(value=b.gradient_checkpointing, description="gradient checkpointing",
                                             style=style(), layout=wide(), indent=False),
        "precision": W.Dropdown(options=precision_options, value=b.precision if b.precision in values else "auto",
                                description="precision", style=style(), layout=wide()),
        "micro_batch": W.IntSlider(value=b.micro_batch, min=1, max=max(16, b.micro_batch),
                                   description="micro-batch", style=style(), layout=wide()),
        "grad_accum": W.IntSlider(value=b.grad_accum, min=1, max=max(32, b.grad_accum),
                                  description="grad accumulation", style=style(), layout=wide()),
        "num_gpus": (W.Dropdown(options=list(range(1, gpus_visible + 1)), value=min(b.num_gpus, gpus_visible),
                                description="GPUs (DDP)", style=style(), layout=wide()) if gpus_visible > 1 else
                     W.Dropdown(options=sorted({1, 2, 4, 8, b.num_gpus}), value=b.num_gpus,
                                description="GPUs (arithmetic)", style=style(), layout=wide())),
        "seq_len": W.Dropdown(options=seq_options, value=b.seq_len, description="sequence length", style=style(),
                              layout=wide()),
        "lora_r": W.Dropdown(options=r_options, value=b.lora_r, description="LoRA rank r", style=style(),
                             layout=wide()),
    }
    if not on_gpu:
        controls[BUDGET] = W.Text(value=budget_text(b.memory_budget_gb), placeholder="none", continuous_update=False,
                                  description="budget (GiB)", style=style(), layout=wide())
    for name, widget in controls.items():
        widget.add_class(f"labkit-{name.replace('_', '-')}")
    controls["gradient_checkpointing"].add_class("labkit-checkpointing")
    return controls


# ---- the memory budget: GiB in a text box, empty for none ------------------------------------------------------------
def budget_text(gib) -> str:
    """What the budget box shows for a budget in GiB: '' for none, else the number as Python writes it (0.02)."""
    return "" if gib is None else repr(float(gib))


def budget_value(text: str, base: RunConfig | None = None) -> float | None:
    """The budget a box's text asks for: None when empty; ValueError, in words, for anything that is not a finite
    number of GiB. Whether the number is allowed (> 0) is RunConfig's to say, through `base.replace`."""
    text = (text or "").strip()
    if not text or text.lower() == "none":
        return None
    try:
        gib = float(text)
    except ValueError:
        raise ValueError(f"memory budget {text!r} is not a number of GiB (e.g. 0.02); leave it empty for no budget")
    return checked_budget(gib, base)


def checked_budget(gib, base: RunConfig | None = None) -> float | None:
    """A budget given to `set()`: None (no budget) or a finite number of GiB that RunConfig accepts."""
    if gib is None:
        return None
    gib = plain(gib)
    if not isinstance(gib, (int, float)) or not is_finite(gib):
        raise ValueError(f"memory_budget_gb must be a finite number of GiB, or None for no budget; got {gib!r}")
    try:
        (base or RunConfig()).replace(memory_budget_gb=float(gib))
    except ValueError as e:
        raise ValueError(f"{e} (None means no budget)") from None
    return float(gib)


def reference_controls(pool: list, live: dict) -> dict:
    """The controls for replaying a set: each offers only the values the set recorded, starting from the recorded
    run closest to the `live` controls."""
    start = closest_record(pool, {f: live[f].value for f in MATCHED_FIELDS + ("num_gpus",)})["config"]
    gc_values = recorded_values(pool, "gradient_checkpointing")
    if gc_values == [False, True]:
        gc = W.Checkbox(value=start["gradient_checkpointing"], description="gradient checkpointing",
                        style=style(), layout=wide(), indent=False)
    else:
        gc = W.Dropdown(options=[("on" if v else "off", v) for v in gc_values],
                        value=start["gradient_checkpointing"], description="gradient checkpointing", style=style(),
                        layout=wide())
    controls = {
        "gradient_checkpointing": gc,
        "precision": W.Dropdown(options=recorded_precisions(pool), value=start["precision"],
                                description="precision", style=style(), layout=wide()),
        "micro_batch": W.SelectionSlider(options=recorded_values(pool, "micro_batch"), value=start["micro_batch"],
                                         description="micro-batch", style=style(), layout=wide()),
        "grad_accum": W.SelectionSlider(options=recorded_values(pool, "grad_accum"), value=start["grad_accum"],
                                        description="grad accumulation", style=style(), layout=wide()),
        "num_gpus": W.Dropdown(options=recorded_values(pool, "num_gpus"), value=start["num_gpus"],
                               description="GPUs (arithmetic)", style=style(), layout=wide()),
        "seq_len": W.Dropdown(options=recorded_values(pool, "seq_len"), value=start["seq_len"],
                              description="sequence length", style=style(), layout=wide()),
        "lora_r": W.Dropdown(options=recorded_values(pool, "lora_r"), value=start["lora_r"],
                             description="LoRA rank r", style=style(), layout=wide()),
    }
    for name, widget in controls.items():
        widget.add_class(f"labkit-{name.replace('_', '-')}")
    controls["gradient_checkpointing"].add_class("labkit-checkpointing")
    return controls


# ---- reading and setting them ----------------------------------------------------------------------------------------
def config_from(controls: dict, base: RunConfig) -> RunConfig:
    """The RunConfig the controls describe on top of `base` (ValueError if they describe a bad one)."""
    changes = {name: w.value for name, w in controls.items()}
    if BUDGET in changes:
        changes[BUDGET] = budget_value(changes[BUDGET], base)
    return base.replace(**changes)


def checked_values(controls: dict, values: dict, reference_name: str | None = None,
                   precision_notes=()) -> list[tuple[W.Widget, object]]:
    """[(widget, value)] for {field: value}, every value checked against what its control offers; ValueError, in
    words, for the first one it does not (True is not the micro-batch 1). `reference_name` is the set being
    replayed, if any; `precision_notes` say why a precision is missing."""
    replaying = f" while replaying reference set '{reference_name}'" if reference_name else ""
    checked = []
    for name, value in values.items():
        if name not in controls:
            raise ValueError(f"the lab has no control {name!r}{replaying}; controls: {', '.join(controls)}")
        widget = controls[name]
        value = plain(value)                              # numpy's bools and integers, as RunConfig takes them
        if name == BUDGET:
            checked.append((widget, budget_text(checked_budget(value))))
            continue
        if isinstance(widget, W.Checkbox) and not isinstance(value, bool):
            raise ValueError(f"{name} must be True or False, got {value!r}")
        allowed = getattr(widget, "options", None)
        if allowed is not None:
            values_ok = [o[1] if isinstance(o, tuple) else o for o in allowed]
            if not any(value == v and type(value) is type(v) for v in values_ok):   # True is not 1
                if reference_name is not None:
                    raise ValueError(f"{name}={value!r} was not recorded in reference set '{reference_name}'; it "
                                     f"has {values_ok}")
                raise ValueError(f"{name}={value!r} is not offered here; choices: {values_ok}"
                                 + (f" ({'; '.join(precision_notes)})" if name == "precision" else ""))
        elif isinstance(widget, W.IntSlider):
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{name} must be an integer, got {value!r}")
            if not widget.min <= value <= widget.max:
                raise ValueError(f"{name}={value!r} is outside {widget.min}..{widget.max}")
        if not (name == "memory_budget_gb" and value == 0):   # then RunConfig's own check, in the API's words:
            RunConfig().replace(**{name: value})              # "off" is not a switch, inf is not a budget
        checked.append((widget, value))
    return checked
