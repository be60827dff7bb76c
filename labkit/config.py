"""RunConfig: every knob a learner can turn, in one dataclass, with the checks that keep it honest.

The rules come from two places:
- Axolotl's memory rules (course brief §7): set micro-batch and accumulation, never a raw batch size; eval batch =
  micro-batch; pad to a constant length; bf16 only where the hardware has it.
- the hardware: a T4 (compute capability 7.5) has no native bf16, so it trains in fp16 with a float16 4-bit compute
  dtype. `resolve_precision` decides from the compute capability, never from `torch.cuda.is_bf16_supported()`,
  which can answer True through emulation.
"""
from __future__ import annotations

import dataclasses
import json
import math
import numbers
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

PRECISIONS = ("fp32", "fp16", "bf16", "auto")
QUANTS = ("nf4", "none")
OPTIMIZERS = ("adamw", "paged_adamw_8bit")
PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
DTYPE_BYTES = {"fp32": 4, "fp16": 2, "bf16": 2}


@dataclass(frozen=True)
class RunConfig:
    model: str = field(default="tiny", metadata={"help": "preset name (see labkit.shapes.PRESETS), a folder with a "
                                                          "checkpoint, or a Llama-family config.json"})
    seq_len: int = field(default=256, metadata={"help": "tokens per sequence; every sequence is padded to it"})
    micro_batch: int = field(default=2, metadata={"help": "sequences per forward/backward on one GPU"})
    grad_accum: int = field(default=4, metadata={"help": "micro-batches accumulated per optimizer step"})
    num_gpus: int = field(default=1, metadata={"help": "data-parallel ranks: N processes under DDP, one GPU each "
                                                          "(N gloo processes labelled cpu-processes on a CPU)"})
    gradient_checkpointing: bool = field(default=True, metadata={"help": "recompute each decoder layer in backward"})
    precision: str = field(default="auto", metadata={"help": "fp32 | fp16 | bf16 | auto (bf16 where native, "
                                                               "fp16 on other GPUs, fp32 on CPU)"})
    quant: str = field(default="nf4", metadata={"help": "nf4 (4-bit NormalFloat + double quant) or none"})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank r"})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha (scale = alpha / r)"})
    lora_dropout: float = field(default=0.05, metadata={"help": "dropout on the LoRA input"})
    lora_targets: tuple[str, ...] = field(default=("q_proj", "k_proj", "v_proj", "o_proj"),
                                          metadata={"help": "Linear layers that get adapters"})
    optim: str = field(default="paged_adamw_8bit", metadata={"help": "adamw (torch, fp32 states) or "
                                                                      "paged_adamw_8bit (bitsandbytes)"})
    learning_rate: float = field(default=2e-4, metadata={"help": "peak learning rate"})
    eval_micro_batch: int | None = field(default=None, metadata={"help": "eval batch; None = micro_batch "
                                                                          "(Axolotl rule 2)"})
    pad_to_seq_len: bool = field(default=True, metadata={"help": "pad every batch to seq_len (Axolotl rule 3)"})
    prepare_kbit: bool = field(default=False, metadata={"help": "call peft's prepare_model_for_kbit_training "
                                                                 "(upcasts norms and embeddings to fp32)"})
    seed: int = field(default=0, metadata={"help": "random seed for weights init, dropout and data order"})
    memory_budget_gb: float | None = field(default=None, metadata={
        "help": "CPU only: declare a run over budget (a simulated OOM) when its measured resident + saved bytes "
                "exceed this many GiB"})

    # ---- derived -------------------------------------------------------------------------------------------------
    @property
    def effective_batch(self) -> int:
        return self.micro_batch * self.grad_accum * self.num_gpus  # e.g. 2 micro × 16 accum × 1 GPU = 32

    @property
    def effective_batch_text(self) -> str:
        return (f"{self.micro_batch} micro × {self.grad_accum} accum × {self.num_gpus} GPU"
                f"{'s' if self.num_gpus != 1 else ''} = {self.effective_batch}")

    @property
    def tokens_per_micro_batch(self) -> int:
        return self.micro_batch * self.seq_len

    def replace(self, **changes) -> "RunConfig":
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ValueError(f"unknown RunConfig field(s): {', '.join(sorted(unknown))}")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["lora_targets"] = list(self.lora_targets)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "RunConfig":
        if not isinstance(d, Mapping):
            raise ValueError(f"RunConfig.from_dict takes a dict of settings such as {{'model': 'tiny'}}, got "
                             f"{type(d).__name__} {_short(d)}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = [k for k in d if k not in known]
        if unknown:
            raise ValueError(f"unknown RunConfig field(s): {', '.join(sorted(map(str, unknown)))}")
        d = dict(d)
        if isinstance(d.get("lora_targets"), (list, tuple)):   # a string is split on commas by __post_init__
            d["lora_targets"] = tuple(d["lora_targets"])
        return cls(**d)

    def key(self) -> str:
        """A stable string that identifies this config (sweeps use it to skip finished runs)."""
        return json.dumps(self.to_dict(), sort_keys=True)

    def __post_init__(self):
        if isinstance(self.lora_targets, str):
            object.__setattr__(self, "lora_targets", tuple(t.strip() for t in self.lora_targets.split(",") if t.strip()))
        elif isinstance(self.lora_targets, list):
            object.__setattr__(self, "lora_targets", tuple(self.lora_targets))
        validate(self)
        _normalise(self)


class LabkitWarning(UserWarning):
    """Advice that does not stop a run (a sequence longer than the model's positions, a rank above a layer's).
    Python shows it as a warning; the command line prints it as one `labkit: warning: …` line."""


# Every field's kind. Counts are whole numbers (an int, never a bool or a float such as 4.0: a float where a count
# goes is a mistake caught here rather than rounded quietly); switches are True or False, never the words "off" or
# "false" (a non-empty string is truthy, so "off" would switch checkpointing on); numbers are finite.
SWITCHES = ("gradient_checkpointing", "pad_to_seq_len", "prepare_kbit")
COUNTS = {"seq_len": 8, "micro_batch": 1, "grad_accum": 1, "num_gpus": 1, "lora_r": 1, "seed": 0}   # field → minimum
# field → maximum: far beyond any run, below what the engine can hold (the Trainer path seeds numpy, which takes
# seeds below 2**32; a float product of counts stays finite). A count past it is a typo, refused before any work.
MAXIMA = {"seq_len": 2 ** 22, "micro_batch": 2 ** 20, "grad_accum": 2 ** 20, "num_gpus": 2 ** 16, "lora_r": 2 ** 16,
          "seed": 2 ** 32 - 1, "eval_micro_batch": 2 ** 20}
CHOICES = {"precision": PRECISIONS, "quant": QUANTS, "optim": OPTIMIZERS}


def is_count(value) -> bool:
    """An integer that is not a bool (True is not the micro-batch 1); numpy integers count."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _positive_int(name: str, value, minimum: int = 1, maximum: int | None = None):
    maximum = MAXIMA.get(name) if maximum is None else maximum
    if not is_count(value) or value < minimum:
        hint = ""
        if isinstance(value, float) and math.isfinite(value) and value.is_integer():
            hint = f" (a float: counts are whole numbers, write {int(value)})"
        elif isinstance(value, str):
            hint = " (a string)"
        raise ValueError(f"{name} must be an integer ≥ {minimum}, got {_short(value)}{hint}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be at most {maximum:,}, got {_short(value)}")


def shorten(text: str) -> str:
    """A value's text cut to one readable line in a message (a 400-digit number, a long string)."""
    return text if len(text) <= 60 else f"{text[:40]}… ({len(text)} characters)"


def _short(value) -> str:
    return shorten(repr(value))


def is_finite(value) -> bool:
    """A real number (never a bool) that is finite; an integer too large for a float (10**400) is not."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def is_switch(value) -> bool:
    """True or False; numpy's bools count, as numpy's integers count as counts."""
    return isinstance(value, bool) or (type(value).__module__ == "numpy" and type(value).__name__ in ("bool", "bool_"))


def plain(value):
    """numpy's bools, integers and floats as Python's (a record is JSON; a widget wants a Python value); anything
    else as it is. The one rule for numpy scalars everywhere the kit takes a setting."""
    if is_switch(value):
        return bool(value)
    if is_count(value):
        return int(value)
    if isinstance(value, numbers.Real) and not isinstance(value, (int, float)):
        return float(value)
    return value


def _switch(name: str, value):
    if not is_switch(value):
        why = ("a word is not a switch" if isinstance(value, str) else
               "a number is not a switch" if isinstance(value, numbers.Number) else None)
        raise ValueError(f"{name} must be True or False, got {value!r}" + (f" ({why})" if why else ""))


def _positive_number(name: str, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a number > 0, got {_short(value)}" + (" (a string)" if isinstance(value, str)
                                                                               else ""))
    if not is_finite(value):
        raise ValueError(f"{name} must be finite, got {_short(value)}")
    if not value > 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")


def _normalise(cfg: RunConfig) -> None:
    """Plain Python numbers in place of numpy ones (a record is JSON): numpy.int64(4) → 4, numpy.float32 → float."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if plain(value) is not value:
            object.__setattr__(cfg, f.name, plain(value))


def validate(cfg: RunConfig) -> None:
    """Raise ValueError with one clear sentence, naming the field, for the first bad one. Device-dependent checks
    (`run_precision_refusal`) come later, because a config can be written on one machine and run on another."""
    if not isinstance(cfg.model, str) or not cfg.model.strip():
        raise ValueError(f"model must be a preset name or a path, got {cfg.model!r}")
    check_text("model", cfg.model)
    for name, minimum in COUNTS.items():
        _positive_int(name, getattr(cfg, name), minimum)
    if cfg.eval_micro_batch is not None:
        _positive_int("eval_micro_batch", cfg.eval_micro_batch)
    for name in SWITCHES:
        _switch(name, getattr(cfg, name))
    _positive_number("lora_alpha", cfg.lora_alpha)
    if (isinstance(cfg.lora_dropout, bool) or not isinstance(cfg.lora_dropout, numbers.Real)
            or not 0 <= cfg.lora_dropout < 1):
        raise ValueError(f"lora_dropout must be in [0, 1), got {cfg.lora_dropout!r}")
    _positive_number("learning_rate", cfg.learning_rate)
    if cfg.memory_budget_gb is not None:
        _positive_number("memory_budget_gb", cfg.memory_budget_gb)
    for name, allowed in CHOICES.items():
        if getattr(cfg, name) not in allowed:
            raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {getattr(cfg, name)!r}")
    if not isinstance(cfg.lora_targets, tuple) or not all(isinstance(t, str) for t in cfg.lora_targets):
        raise ValueError(f"lora_targets must be projection names such as ('q_proj', 'v_proj') or 'q_proj,v_proj', "
                         f"got {cfg.lora_targets!r}")
    if not cfg.lora_targets:
        raise ValueError("lora_targets must name at least one projection")
    bad = [t for t in cfg.lora_targets if t not in PROJECTIONS]
    if bad:
        raise ValueError(f"unknown LoRA target(s) {', '.join(bad)}; choose from {', '.join(PROJECTIONS)}")
    if len(set(cfg.lora_targets)) != len(cfg.lora_targets):
        raise ValueError("lora_targets lists a projection twice")


def check_text(name: str, text: str) -> None:
    """A name or path the kit will print and write into records (JSON, UTF-8): it must be text UTF-8 can hold. A
    file name made of bytes no encoding reads arrives as lone surrogates (Python's surrogateescape) and would fail
    later, mid-print or mid-write; it is refused here."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{name} {ascii(text)} is not valid UTF-8 text (a file name with bytes no encoding reads); "
                         "rename it") from None


def check_steps(steps, warmup) -> None:
    """ValueError (one line) for a step count below 1 or a warm-up outside [0, steps): the same rule for
    labkit.run, sweep, largest_micro_batch, the lab and the command line, checked before any work."""
    _positive_int("steps", steps, 1, maximum=10 ** 6)
    if not is_count(warmup) or not 0 <= warmup < steps:
        raise ValueError(f"warmup must be an integer in [0, steps) = [0, {steps}), got {_short(warmup)}")


def check_device(device) -> None:
    """None (this machine's best), "cpu", "cuda" or "cuda:N"; anything else is one ValueError, before any work."""
    if device is None:
        return
    if type(device).__module__ == "torch" and type(device).__name__ == "device":
        device = str(device)                            # torch.device("cuda", 1) reads as "cuda:1"
    if not isinstance(device, str) or not re.fullmatch(r"(cpu|cuda)(:\d{1,3})?", device):
        raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N' (or None: this machine's best), got "
                         f"{_short(device)}")


def check_callback(name: str, fn) -> None:
    if fn is not None and not callable(fn):
        raise ValueError(f"{name} must be a function (or None), got {_short(fn)}")


def check_config(cfg, what: str = "expected") -> None:
    if not isinstance(cfg, RunConfig):
        hint = "RunConfig.from_dict(d) builds one" if isinstance(cfg, Mapping) else \
            "RunConfig(**settings) or RunConfig.from_dict(d) builds one"
        raise ValueError(f"{what} a labkit.RunConfig, got {type(cfg).__name__} {_short(cfg)} ({hint})")


def check_configs(configs, what: str = "a sweep") -> list:
    """A list of RunConfigs (grid() makes one). One RunConfig, dicts, or anything else: one ValueError naming it."""
    if isinstance(configs, RunConfig):
        raise ValueError(f"{what} takes a list of RunConfigs, got a single RunConfig: write [cfg], or "
                         "grid(cfg, {...}) for several")
    if isinstance(configs, (str, bytes, Mapping)) or not isinstance(configs, Iterable):
        raise ValueError(f"{what} takes a list of RunConfigs, got {type(configs).__name__} {_short(configs)}")
    configs = list(configs)
    for n, cfg in enumerate(configs):
        if not isinstance(cfg, RunConfig):
            hint = " (RunConfig.from_dict(d) builds one)" if isinstance(cfg, Mapping) else ""
            raise ValueError(f"{what}: item {n} is {type(cfg).__name__} {_short(cfg)}, not a RunConfig{hint}")
    return configs


def accumulation_for(effective_batch: int, micro_batch: int, num_gpus: int = 1) -> int:
    """Axolotl rule 1: pick micro-batch and GPUs, derive accumulation = batch / micro / GPUs (must divide)."""
    for name, v in (("effective_batch", effective_batch), ("micro_batch", micro_batch), ("num_gpus", num_gpus)):
        _positive_int(name, v)
    per_step = micro_batch * num_gpus
    if effective_batch % per_step:
        raise ValueError(f"effective batch {effective_batch} is not a multiple of micro_batch × GPUs = {per_step}")
    return effective_batch // per_step


def rule_warnings(cfg: RunConfig) -> list[str]:
    """Axolotl-style advice that does not stop a run (course brief §7)."""
    out = []
    if cfg.eval_micro_batch is not None and cfg.eval_micro_batch != cfg.micro_batch:
        out.append(f"eval_micro_batch {cfg.eval_micro_batch} ≠ micro_batch {cfg.micro_batch}: the memory profile "
                   "changes between train and eval, so an eval can OOM after training fit (Axolotl rule 2)")
    if not cfg.pad_to_seq_len:
        out.append("pad_to_seq_len is off: batches of changing shape fragment the caching allocator "
                   "(reserved ≫ allocated); pad to a constant length (Axolotl rule 3)")
    if cfg.quant == "none":
        out.append("quant=none loads the base in 16/32-bit: this is LoRA, not QLoRA, and the weights need 4× "
                   "(fp16) to 8× (fp32) the memory of NF4")
    if cfg.lora_alpha / cfg.lora_r > 4:
        out.append(f"lora_alpha / lora_r = {cfg.lora_alpha / cfg.lora_r:g} is a large adapter scale; "
                   "the course default is alpha = 2r")
    return out


# ---- precision and hardware -------------------------------------------------------------------------------------
def native_bf16(capability: tuple[int, int] | None) -> bool:
    """bf16 tensor cores exist from compute capability 8.0 (Ampere). None = CPU (bf16 runs, natively or not)."""
    return capability is None or capability >= (8, 0)


def resolve_precision(precision: str, device_type: str, capability: tuple[int, int] | None) -> str:
    """Turn 'auto' into a concrete precision for this device, and refuse bf16 where it is not native.

    auto: CUDA with capability ≥ 8.0 → bf16; older CUDA (T4 = 7.5) → fp16; CPU → fp32 (fastest there).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if device_type == "cuda":
        if precision == "auto":
            return "bf16" if native_bf16(capability) else "fp16"
        if precision == "bf16" and not native_bf16(capability):
            raise ValueError(run_precision_refusal(precision, device_type, capability))
        return precision
    return "fp32" if precision == "auto" else precision


FP16_ON_CPU = ("fp16 is not offered on the CPU: fp16 with loss scaling is a GPU recipe (lesson 04 shows the scaling "
               "by hand); use fp32 or bf16 here")


def run_precision_refusal(precision: str, device_type: str, capability: tuple[int, int] | None) -> str | None:
    """Why a run cannot use `precision` on this device, or None when it can. One rule for the API, the command line
    and the lab: bf16 only where the GPU has bf16 tensor cores (compute capability ≥ 8.0); fp16 only on a GPU (on a
    CPU the lab does not offer it, and `run` refuses it alike). bf16 on a CPU is allowed: it shows the memory effect.
    An estimate (theory only, nothing runs) is refused only the bf16 case, through `resolve_precision`."""
    if device_type == "cuda" and precision == "bf16" and not native_bf16(capability):
        cc = ".".join(map(str, capability)) if capability else "?"
        return (f"bf16 is not native on this GPU (compute capability {cc} < 8.0): use fp16 "
                "(torch.cuda.is_bf16_supported() may say True here through emulation, slowly)")
    if device_type != "cuda" and precision == "fp16":
        return FP16_ON_CPU
    return None
