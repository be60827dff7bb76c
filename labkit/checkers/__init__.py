"""Checkers for the exercise notebooks (`exercises/`, worked answers in `solutions/`).

Every checker takes the learner's function (or class), runs it on real test cases and compares the answers with
references computed by labkit itself (the theory, the config rules), by torch (gradients, `GradScaler`) or by a
brute-force search. It then prints either one fixed line,

    ✓ effective batch: all 8 cases pass

or, for each failing case, what was expected, what came back and a hint. A checker never raises on a wrong answer:
it returns a `CheckResult`, which is truthy when every case passed. A function that still raises
`NotImplementedError` (the stub in `exercises/`) gets "not implemented yet" instead.

The cases are fixed (seeded where random), so the pass line is the same on every machine: the solution notebooks
pin it with `# NBVAL_CHECK_OUTPUT`, and CI runs them on a CPU.
"""
from __future__ import annotations

import copy
import math
import numbers
import random
from dataclasses import dataclass, field

import torch

from labkit import theory
from labkit.config import RunConfig, accumulation_for, resolve_precision
from labkit.shapes import PRESETS, ModelShape, resolve_shape

GiB = 1024 ** 3
T4_TOTAL_MEMORY = 15_835_660_288          # what Colab's T4 reports as total_memory (14.75 GiB)
MAX_SHOWN = 3                             # failing cases printed in full; the rest are counted

# Every checker and the name it prints; build_exercises reads this to pin the "not implemented" line.
TITLES = {
    "check_param_count": "parameter count",
    "check_weights_gib": "weights in GiB",
    "check_lora_params": "LoRA parameters",
    "check_adapter_state": "adapter state bytes",
    "check_logits_bytes": "logits bytes",
    "check_checkpointed_activations": "checkpointed activations",
    "check_best_segments": "checkpoint segments",
    "check_accumulation": "effective batch",
    "check_grad_accumulation": "gradient accumulation",
    "check_precision": "precision choice",
    "check_loss_scaler": "loss scaling",
    "check_qlora_budget": "QLoRA budget",
    "check_qlora_kwargs": "QLoRA recipe",
    "check_largest_micro_batch": "largest micro-batch search",
    "check_axolotl_rules": "Axolotl rules",
    "check_fit_on_t4": "fit on a T4",
    "check_training_hours": "training time",
}


# ---------------------------------------------------------------------------------------------------------------
# Results and the common runner
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class Failure:
    case: str
    expected: str
    got: str
    hint: str = ""


@dataclass
class CheckResult:
    """What a checker found. Truthy when every case passed."""
    title: str
    cases: int
    failures: list[Failure] = field(default_factory=list)
    not_implemented: bool = False

    @property
    def passed(self) -> bool:
        return not self.not_implemented and not self.failures

    def __bool__(self) -> bool:
        return self.passed

    def summary(self) -> str:
        if self.not_implemented:
            return not_implemented_line(self.title)
        if self.passed:
            return pass_line(self.title, self.cases)
        return f"✗ {self.title}: {len(self.failures)} of {self.cases} cases fail"

    def __repr__(self) -> str:
        return f"CheckResult({self.summary()!r})"

    def _ipython_display_(self):
        """The checker has printed its report already; a bare `check_…(…)` at the end of a cell shows nothing
        more."""


def pass_line(title: str, cases: int) -> str:
    return f"✓ {title}: all {cases} cases pass"


def not_implemented_line(title: str) -> str:
    return f"… {title}: not implemented yet — fill in the cell above, run it, then run this check again"


class _NotImplemented(Exception):
    pass


def _call(fn, *args, **kwargs):
    """Call learner code: ("ok", value) or ("raised", exception). NotImplementedError ends the whole check."""
    try:
        return "ok", fn(*args, **kwargs)
    except NotImplementedError:
        raise _NotImplemented from None
    except Exception as e:  # noqa: BLE001 — a learner's bug is a failed case, never a crash
        return "raised", e


def _raised_text(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"raised {type(e).__name__}" + (f": {text[0][:160]}" if text else "")


def _run(name: str, cases) -> CheckResult:
    """`cases`: list of zero-argument callables, each returning None (pass) or a Failure."""
    title = TITLES[name]
    failures = []
    try:
        for case in cases:
            try:
                outcome = case()
            except _NotImplemented:
                raise
            except Exception as e:  # noqa: BLE001 — a checker bug must not look like a learner's
                outcome = Failure("(checker)", "the case to run", _raised_text(e),
                                  "this looks like a bug in the checker itself; please report it")
            if outcome is not None:
                failures.append(outcome)
    except _NotImplemented:
        result = CheckResult(title, len(cases), not_implemented=True)
        print(result.summary())
        return result
    result = CheckResult(title, len(cases), failures)
    print(result.summary())
    for f in failures[:MAX_SHOWN]:
        print(f"  • {f.case}")
        print(f"      expected: {f.expected}")
        print(f"      got:      {f.got}")
        if f.hint:
            print(f"      hint:     {f.hint}")
    if len(failures) > MAX_SHOWN:
        print(f"  … and {len(failures) - MAX_SHOWN} more failing case(s)")
    return result


def _is_number(x) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


def _as_number(x):
    """Learners may hand back a 0-d tensor or a numpy scalar; take its value. None if it is no number."""
    if isinstance(x, torch.Tensor) and x.numel() == 1:
        x = x.item()
    if hasattr(x, "item") and not isinstance(x, numbers.Real):
        try:
            x = x.item()
        except Exception:  # noqa: BLE001
            return None
    return x if _is_number(x) else None


def _close(got, expected, rel: float = 1e-9, abs_tol: float = 0.0) -> bool:
    return math.isclose(got, expected, rel_tol=rel, abs_tol=abs_tol)


def _bytes(n) -> str:
    if not _is_number(n):
        return repr(n)
    return f"{n:,.0f} B ({n / GiB:.3f} GiB)" if abs(n) >= 1024 ** 2 else f"{n:,.0f} B"


def _near(got, candidates: dict, rel: float = 1e-6):
    """The name of the first candidate wrong answer that `got` equals (within rel), or None."""
    for hint, value in candidates.items():
        if value is not None and _is_number(got) and _close(got, value, rel):
            return hint
    return None


def _number_case(label: str, fn, args: tuple, expected, rel: float, wrong: dict, fmt=repr,
                 default_hint: str = ""):
    """A case whose answer is one number: compare within `rel`; name the mistake when `got` matches a known
    wrong answer (`wrong`: {hint: wrong value})."""
    def case():
        status, got = _call(fn, *args)
        if status == "raised":
            return Failure(label, fmt(expected), _raised_text(got), default_hint)
        value = _as_number(got)
        if value is None:
            return Failure(label, fmt(expected), f"{got!r} (not a number)", "return a number (int or float)")
        if _close(value, expected, rel):
            return None
        return Failure(label, fmt(expected), fmt(value), _near(value, wrong) or default_hint)
    return case


def _shape_text(shape: ModelShape) -> str:
    for name, preset in PRESETS.items():
        if preset.shape == shape:
            return name
    return (f"ModelShape(h={shape.hidden}, i={shape.intermediate}, L={shape.layers}, heads={shape.heads}, "
            f"kv={shape.kv_heads}, V={shape.vocab}{', tied' if shape.tied else ''})")


def _random_shape(rng: random.Random) -> ModelShape:
    hd = rng.choice([32, 64, 128])
    heads = rng.choice([4, 8, 12, 16])
    kv = rng.choice([h for h in (1, 2, 4, heads) if heads % h == 0])
    inter = rng.choice([2, 3, 4]) * hd * heads + 64 * rng.randint(0, 4)
    return ModelShape("llama", hidden=hd * heads, intermediate=inter,
                      layers=rng.randint(2, 40), heads=heads, kv_heads=kv, vocab=rng.choice([32000, 49152, 50257]),
                      tied=rng.random() < 0.5, head_dim=hd)


# ---------------------------------------------------------------------------------------------------------------
# 00 — warm-up: parameters and bytes
# ---------------------------------------------------------------------------------------------------------------
def reference_param_count(shape: ModelShape) -> int:
    """Every parameter of a Llama-family decoder: embeddings, head (unless tied), per layer the seven Linears,
    two RMSNorm weights and (Qwen2) the q/k/v biases, and the final norm."""
    linear = sum(d_in * d_out for d_in, d_out in shape.linear_dims().values())
    bias = (shape.heads + 2 * shape.kv_heads) * shape.hd if shape.qkv_bias else 0
    head = 0 if shape.tied else shape.vocab * shape.hidden
    return shape.vocab * shape.hidden + head + shape.layers * (linear + 2 * shape.hidden + bias) + shape.hidden


def check_param_count(count_params) -> CheckResult:
    """`count_params(shape) -> int`, checked on every preset against the published totals
    (Llama-3.2-1B 1,235,814,400; Llama-3.1-8B 8,030,261,248; Qwen2.5-0.5B 494,032,768; SmolLM2-360M 361,821,120)."""
    cases = []
    for name, preset in PRESETS.items():
        s = preset.shape
        exp = reference_param_count(s)
        linear = sum(a * b for a, b in s.linear_dims().values())
        mha = dict(s.linear_dims(), k_proj=(s.hidden, s.hidden), v_proj=(s.hidden, s.hidden))
        bias = (s.heads + 2 * s.kv_heads) * s.hd if s.qkv_bias else 0
        wrong = {
            "a tied model shares one matrix between the embeddings and lm_head: count it once": (
                exp + s.vocab * s.hidden if s.tied else None),
            "an untied model has its own lm_head (vocab × hidden) besides the embeddings": (
                exp - s.vocab * s.hidden if not s.tied else None),
            "k_proj and v_proj output kv_heads × head_dim values (grouped-query attention), not hidden": (
                exp + s.layers * (sum(a * b for a, b in mha.values()) - linear) if s.kv_heads != s.heads else None),
            "each layer has two RMSNorm weight vectors (hidden values each), plus one final norm": (
                exp - s.layers * 2 * s.hidden - s.hidden),
            "Qwen2 has biases on q_proj, k_proj and v_proj (their output sizes, per layer)": (
                exp - s.layers * bias if bias else None),
        }
        cases.append(_number_case(f"count_params(PRESETS[{name!r}].shape)", count_params, (s,), exp, 0.0, wrong,
                                  fmt=lambda v: f"{v:,}", default_hint="walk the layer: embeddings, q/k/v/o, "
                                  "gate/up/down, two norms; then the final norm and lm_head"))
    return _run("check_param_count", cases)


BYTES_PER_PARAM = {"fp32": 4, "fp16": 2, "bf16": 2, "int8": 1, "nf4": 0.5}


def check_weights_gib(weights_gib) -> CheckResult:
    """`weights_gib(n_params, dtype) -> float`: GiB (2**30 bytes) to hold n_params in fp32/fp16/bf16/int8/nf4
    (nf4 = 4 bits, its quantisation constants left out)."""
    rng = random.Random(0)
    pairs = [(8_030_261_248, "fp16"), (8_030_261_248, "nf4"), (1_235_814_400, "fp32"), (494_032_768, "bf16"),
             (361_821_120, "int8")]
    pairs += [(rng.randint(10 ** 6, 10 ** 11), dt) for dt in ("fp32", "bf16", "nf4")]
    cases = []
    for n, dt in pairs:
        exp = n * BYTES_PER_PARAM[dt] / GiB
        wrong = {
            "nf4 stores 4 bits = half a byte per weight": (n * 4 / GiB if dt == "nf4" else None),
            "nf4 is 4 bits: half a byte per weight, not a whole one": (n / GiB if dt == "nf4" else None),
            "bf16 and fp16 take 2 bytes a value; fp32 takes 4": (n * 4 / GiB if dt in ("fp16", "bf16") else None),
            "fp32 takes 4 bytes a value": (n * 2 / GiB if dt == "fp32" else None),
            "GiB = 1024³ bytes (what torch and Colab report), not 10⁹": n * BYTES_PER_PARAM[dt] / 1e9,
            "that is the number of bits: divide by 8 for bytes": n * BYTES_PER_PARAM[dt] * 8 / GiB,
        }
        cases.append(_number_case(f"weights_gib({n:,}, {dt!r})", weights_gib, (n, dt), exp, 1e-9, wrong,
                                  fmt=lambda v: f"{v:.4f} GiB" if _is_number(v) else repr(v)))
    return _run("check_weights_gib", cases)


# ---------------------------------------------------------------------------------------------------------------
# 01 — where the memory goes
# ---------------------------------------------------------------------------------------------------------------
def _cfg(**kw) -> RunConfig:
    return RunConfig(**kw)


def check_lora_params(lora_params) -> CheckResult:
    """`lora_params(shape, r, targets) -> int`: trainable LoRA parameters, compared with labkit.theory."""
    rng = random.Random(1)
    specs = [(PRESETS["llama-3.2-1b"].shape, 16, ("q_proj", "k_proj", "v_proj", "o_proj")),
             (PRESETS["llama-3.1-8b"].shape, 16, ("q_proj", "k_proj", "v_proj", "o_proj")),
             (PRESETS["qwen2.5-0.5b"].shape, 8, ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                                 "down_proj")),
             (PRESETS["smollm2-360m"].shape, 32, ("q_proj", "v_proj")),
             (PRESETS["tiny"].shape, 4, ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"))]
    for _ in range(3):
        specs.append((_random_shape(rng), rng.choice([4, 8, 16, 64]),
                      tuple(sorted(rng.sample(("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                               "down_proj"), rng.randint(1, 7))))))
    cases = []
    for shape, r, targets in specs:
        cfg = _cfg(lora_r=r, lora_targets=targets)
        exp = theory.trainable_params(shape, cfg)
        dims = shape.linear_dims()
        square_kv = {t: ((shape.hidden, shape.hidden) if t in ("k_proj", "v_proj") else dims[t]) for t in targets}
        wrong = {
            "k_proj and v_proj are narrower than q_proj: they output kv_heads × head_dim (GQA)": (
                shape.layers * sum(r * (a + b) for a, b in square_kv.values()) if shape.kv_heads != shape.heads
                else None),
            "LoRA adds two matrices per target, A (r × d_in) and B (d_out × r): count both": (
                shape.layers * sum(r * dims[t][0] for t in targets)),
            "that is one layer's adapters: multiply by the number of layers": exp // shape.layers,
            "a LoRA pair is r·(d_in + d_out) parameters, not d_in·d_out": (
                shape.layers * sum(dims[t][0] * dims[t][1] for t in targets)),
        }
        cases.append(_number_case(f"lora_params({_shape_text(shape)}, r={r}, targets={list(targets)})",
                                  lora_params, (shape, r, targets), exp, 0.0, wrong, fmt=lambda v: f"{v:,}"))
    return _run("check_lora_params", cases)


ADAPTER_KEYS = ("weights", "gradients", "optimizer")


def check_adapter_state(adapter_state) -> CheckResult:
    """`adapter_state(n_trainable, optim) -> {"weights", "gradients", "optimizer"}` in bytes, by the simple rule,
    compared with labkit.theory's tensor-by-tensor count (within 3%)."""
    specs = [("llama-3.2-1b", 16), ("llama-3.1-8b", 16), ("llama-3.1-8b", 64), ("smollm2-360m", 32)]
    cases = []
    for model, r in specs:
        for optim in ("adamw", "paged_adamw_8bit"):
            shape = PRESETS[model].shape
            cfg = _cfg(lora_r=r, optim=optim)
            n = theory.trainable_params(shape, cfg)
            lora = n * theory.ADAPTER_BYTES
            exp = {"weights": lora, "gradients": lora, "optimizer": theory.optimizer_bytes(shape, cfg)}
            cases.append(_dict_case(f"adapter_state({n:,}, {optim!r})  # {model}, r={r}", adapter_state,
                                    (n, optim), exp, {"weights": 0.03, "gradients": 0.03, "optimizer": 0.03},
                                    _adapter_hint(n, optim)))
    return _run("check_adapter_state", cases)


def _adapter_hint(n, optim):
    def hint(key, got):
        table = {
            ("weights", 2 * n): "peft keeps LoRA adapters in fp32 (4 bytes), even when the base computes in 16-bit",
            ("gradients", 2 * n): "a gradient has the dtype of its parameter: fp32 adapters get fp32 gradients",
            ("gradients", 0): "the adapters are trained, so each has a gradient as large as itself",
            ("optimizer", 4 * n): "Adam keeps two moments per parameter (m and v), not one",
            ("optimizer", 16 * n): "Adam's two fp32 moments are 8 bytes per parameter; weights and gradients are "
                                   "their own lines",
            ("optimizer", 1 * n): "8-bit Adam keeps two moments, one byte each: ≈ 2 bytes per parameter",
            ("optimizer", 8 * n): ("8-bit Adam stores each moment in one byte: ≈ 2 bytes per parameter"
                                   if optim == "paged_adamw_8bit" else None),
            ("optimizer", 2 * n): ("torch AdamW keeps both moments in fp32: 8 bytes per parameter"
                                   if optim == "adamw" else None),
        }
        for (k, v), text in table.items():
            if k == key and text and _is_number(got) and _close(got, v, 0.03):
                return text
        return "bytes = parameters × bytes per parameter: 4 for fp32 weights and gradients, 8 for AdamW's " \
               "two fp32 moments, ≈ 2 for 8-bit Adam"
    return hint


def _dict_case(label, fn, args, expected: dict, rel: dict, hint_for):
    """A case whose answer is a dict of byte counts: every key of `expected` must be there and within rel[key]."""
    def case():
        status, got = _call(fn, *args)
        exp_text = ", ".join(f"{k}={_bytes(v)}" for k, v in expected.items())
        if status == "raised":
            return Failure(label, exp_text, _raised_text(got))
        if not isinstance(got, dict):
            return Failure(label, exp_text, f"{type(got).__name__} {got!r}"[:200],
                           f"return a dict with the keys {', '.join(expected)}")
        missing = [k for k in expected if k not in got]
        if missing:
            return Failure(label, exp_text, f"a dict without {', '.join(map(repr, missing))}",
                           f"return a dict with the keys {', '.join(expected)}")
        for k, v in expected.items():
            value = _as_number(got[k])
            if value is None:
                return Failure(f"{label} [{k!r}]", _bytes(v), repr(got[k]), "each value is a number of bytes")
            if not _close(value, v, rel[k], abs_tol=0.5):
                return Failure(f"{label} [{k!r}]", f"{_bytes(v)} (± {rel[k]:.0%})", _bytes(value), hint_for(k, value))
        return None
    return case


def check_logits_bytes(logits_bytes) -> CheckResult:
    """`logits_bytes(micro_batch, seq_len, vocab) -> int`: bytes the loss keeps for backward (the fp32 log-softmax
    of every position), compared with labkit.theory.logits_saved (within 1%)."""
    rng = random.Random(2)
    specs = [("llama-3.2-1b", 2, 512), ("llama-3.1-8b", 4, 2048), ("qwen2.5-0.5b", 8, 1024), ("smollm2-360m", 1, 4096),
             ("tiny", 2, 128)]
    specs += [(rng.choice(list(PRESETS)), rng.randint(1, 16), rng.choice([256, 1000, 2048, 8192])) for _ in range(3)]
    cases = []
    for model, b, s in specs:
        shape = PRESETS[model].shape
        exp = theory.logits_saved(shape, _cfg(model=model, micro_batch=b, seq_len=s))
        V, h = shape.vocab, shape.hidden
        wrong = {
            "transformers upcasts the logits to fp32 before the loss: 4 bytes each": b * s * V * 2,
            "one logit per vocabulary entry, at every position: b × s × vocab": b * s * h * 4,
            "the logits exist for every sequence of the micro-batch: multiply by micro_batch": s * V * 4,
        }
        cases.append(_number_case(f"logits_bytes({b}, {s}, {V:,})  # {model}", logits_bytes, (b, s, V), exp, 0.01,
                                  wrong, fmt=_bytes))
    return _run("check_logits_bytes", cases)


# ---------------------------------------------------------------------------------------------------------------
# 02 — activations and gradient checkpointing
# ---------------------------------------------------------------------------------------------------------------
def check_checkpointed_activations(checkpointed_bytes) -> CheckResult:
    """`checkpointed_bytes(micro_batch, seq_len, hidden, layers, precision) -> int`: what per-layer gradient
    checkpointing keeps (each decoder layer's input), compared with labkit.theory.saved_activations."""
    rng = random.Random(3)
    seven_b = ModelShape("llama", 4096, 11008, 32, 32, 32, 32000, tied=False)     # the seed's 7B example
    specs = [(seven_b, 1, 2048, "fp16"), (seven_b, 8, 2048, "bf16"), (PRESETS["tiny"].shape, 2, 128, "fp32"),
             (PRESETS["llama-3.1-8b"].shape, 4, 2048, "fp16")]
    specs += [(_random_shape(rng), rng.randint(1, 16), rng.choice([128, 512, 4096]), p) for p in ("fp32", "bf16")]
    cases = []
    for shape, b, s, prec in specs:
        cfg = _cfg(micro_batch=b, seq_len=s, gradient_checkpointing=True)
        exp = theory.saved_activations(shape, cfg, prec).checkpoints
        h, L = shape.hidden, shape.layers
        wrong = {
            "bytes per value follow the precision: 2 for fp16/bf16, 4 for fp32 (a CPU run is fp32)": (
                b * s * h * L * 2 if prec == "fp32" else b * s * h * L * 4),
            "one layer input per decoder layer: multiply by the number of layers": b * s * h * DTYPE_OF[prec],
            "the inputs are micro_batch × seq_len × hidden values: include the batch": s * h * L * DTYPE_OF[prec],
        }
        cases.append(_number_case(f"checkpointed_bytes({b}, {s}, {h}, {L}, {prec!r})", checkpointed_bytes,
                                  (b, s, h, L, prec), exp, 0.0, wrong, fmt=_bytes))
    return _run("check_checkpointed_activations", cases)


DTYPE_OF = {"fp32": 4, "fp16": 2, "bf16": 2}


def segment_memory(layers: int, k: int, input_bytes: float, layer_bytes: float) -> float:
    """Chen et al.'s scheme: keep the inputs of k segments, and during backward recompute one segment of
    ⌈L / k⌉ layers with all its activations."""
    return k * input_bytes + math.ceil(layers / k) * layer_bytes


def check_best_segments(best_segments) -> CheckResult:
    """`best_segments(layers, input_bytes, layer_bytes) -> k`: the number of checkpointed segments (1..L) with the
    smallest `segment_memory`; any k that reaches the minimum passes."""
    rng = random.Random(4)
    shape8 = PRESETS["llama-3.1-8b"].shape
    cfg8 = _cfg(model="llama-3.1-8b", micro_batch=1, seq_len=2048)
    real_in = 1 * 2048 * shape8.hidden * 2
    real_layer = theory.recompute_bytes(shape8, cfg8, "fp16")
    specs = [(32, real_in, real_layer), (16, 1.0, 1.0), (64, 1.0, 1.0), (80, 2.0, 1.0), (1, 5.0, 3.0), (12, 1.0, 40.0)]
    specs += [(rng.randint(2, 100), float(rng.randint(1, 50)), float(rng.randint(1, 50))) for _ in range(4)]
    cases = []
    for L, a, f in specs:
        def case(L=L, a=a, f=f):
            label = f"best_segments({L}, {a:g}, {f:g})"
            best_mem = min(segment_memory(L, k, a, f) for k in range(1, L + 1))
            best_ks = [k for k in range(1, L + 1) if segment_memory(L, k, a, f) == best_mem]
            exp_text = (f"k in {best_ks}" if len(best_ks) > 1 else f"{best_ks[0]}") + f" (memory {best_mem:g})"
            status, got = _call(best_segments, L, a, f)
            if status == "raised":
                return Failure(label, exp_text, _raised_text(got))
            if isinstance(got, bool) or not isinstance(got, numbers.Integral) or not 1 <= got <= L:
                return Failure(label, exp_text, repr(got), f"return a whole number of segments between 1 and {L}")
            mem = segment_memory(L, int(got), a, f)
            if mem == best_mem:
                return None
            sq = max(1, min(L, round(math.sqrt(L))))
            if got == sq:
                hint = ("√L is best only when a layer's activations cost as much as its input; minimise "
                        "k·input + ⌈L/k⌉·layer instead")
            elif got == L:
                hint = "one checkpoint per layer (what transformers does) is simple, not always the smallest"
            else:
                hint = "try every k from 1 to L and keep the one with the least k·input + ⌈L/k⌉·layer"
            return Failure(label, exp_text, f"{got} (memory {mem:g})", hint)
        cases.append(case)
    return _run("check_best_segments", cases)


# ---------------------------------------------------------------------------------------------------------------
# 03 — batch size and gradient accumulation
# ---------------------------------------------------------------------------------------------------------------
def check_accumulation(plan_accumulation) -> CheckResult:
    """`plan_accumulation(effective_batch, micro_batch, num_gpus) -> int`, compared with
    labkit.config.accumulation_for; a batch that does not divide must raise ValueError."""
    specs = [(32, 2, 1), (32, 2, 2), (64, 4, 2), (32, 32, 1), (128, 8, 4), (30, 4, 1), (32, 3, 1), (16, 4, 8),
             (32, 0, 1)]
    cases = []
    for eff, mb, g in specs:
        def case(eff=eff, mb=mb, g=g):
            label = f"plan_accumulation({eff}, micro_batch={mb}, num_gpus={g})"
            try:
                exp = accumulation_for(eff, mb, g)
            except ValueError:
                exp = None
            status, got = _call(plan_accumulation, eff, mb, g)
            if exp is None:
                if status == "raised" and isinstance(got, ValueError):
                    return None
                if status == "raised":
                    return Failure(label, "ValueError", _raised_text(got),
                                   "check the inputs yourself and raise ValueError with a sentence that says why")
                return Failure(label, "ValueError", repr(got),
                               "a rounded accumulation silently changes the effective batch: raise ValueError "
                               "when micro_batch × num_gpus does not divide it")
            if status == "raised":
                return Failure(label, repr(exp), _raised_text(got))
            if got == exp and not isinstance(got, bool) and isinstance(got, numbers.Integral):
                return None
            if _is_number(got) and got == exp:
                return Failure(label, repr(exp), repr(got), "return a whole number (use //, not /)")
            hint = "effective batch = micro_batch × accumulation × num_gpus: solve for accumulation"
            if got == eff // mb and g > 1:
                hint = "each GPU runs its own micro-batch: divide by micro_batch × num_gpus"
            return Failure(label, repr(exp), repr(got), hint)
        cases.append(case)
    return _run("check_accumulation", cases)


class TinyLM(torch.nn.Module):
    """A very small next-token model (embedding → tanh layer → vocabulary head) for the accumulation exercises."""

    def __init__(self, vocab: int = 29, dim: int = 12, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.embed = torch.nn.Embedding(vocab, dim)
        self.mix = torch.nn.Linear(dim, dim)
        self.head = torch.nn.Linear(dim, vocab)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)

    def forward(self, input_ids):
        return self.head(torch.tanh(self.mix(self.embed(input_ids))))


def make_micro_batches(n_micro: int, micro_batch: int, seq_len: int, vocab: int = 29, seed: int = 0,
                       lengths=None):
    """`n_micro` micro-batches of (input_ids, labels), labels already aligned with the outputs. Positions past a
    sequence's length are padding: label -100, which the loss ignores. `lengths` (one per sequence, flattened
    over the micro-batches) defaults to random lengths between 1 and seq_len."""
    g = torch.Generator().manual_seed(seed)
    total = n_micro * micro_batch
    if lengths is None:
        lengths = torch.randint(1, seq_len + 1, (total,), generator=g).tolist()
    if len(lengths) != total:
        raise ValueError(f"need {total} lengths, got {len(lengths)}")
    out = []
    for m in range(n_micro):
        ids = torch.randint(0, vocab, (micro_batch, seq_len), generator=g)
        labels = torch.randint(0, vocab, (micro_batch, seq_len), generator=g)
        for row in range(micro_batch):
            labels[row, lengths[m * micro_batch + row]:] = -100
        out.append((ids, labels))
    return out


def _grads(model):
    return [None if p.grad is None else p.grad.detach().clone() for p in model.parameters()]


def _reference_grads(model, micro_batches, mode: str):
    """Gradients of `model` (a copy is used) for the cycle: "big" = one big batch, the loss averaged over every
    label token; "mean_per_micro" = each micro-batch's mean loss / number of micro-batches; "sum_of_means" = the
    per-micro means summed; "per_sequence" = summed token losses / number of sequences."""
    m = copy.deepcopy(model)
    m.zero_grad(set_to_none=True)
    ce = torch.nn.functional.cross_entropy
    if mode == "big":
        ids = torch.cat([i for i, _ in micro_batches])
        labels = torch.cat([lab for _, lab in micro_batches])
        ce(m(ids).flatten(0, 1), labels.flatten(), ignore_index=-100).backward()
    else:
        n_seq = sum(i.shape[0] for i, _ in micro_batches)
        for ids, labels in micro_batches:
            logits = m(ids).flatten(0, 1)
            if mode == "per_sequence":
                loss = ce(logits, labels.flatten(), ignore_index=-100, reduction="sum") / n_seq
            else:
                loss = ce(logits, labels.flatten(), ignore_index=-100)
                if mode == "mean_per_micro":
                    loss = loss / len(micro_batches)
            loss.backward()
    return _grads(m)


def _same_grads(a, b, rtol=1e-4, atol=1e-6) -> bool:
    if any(x is None for x in a) or any(y is None for y in b):
        return False
    return all(x.shape == y.shape and torch.allclose(x, y, rtol=rtol, atol=atol) for x, y in zip(a, b))


def _max_diff(a, b) -> float:
    return max(float((x - y).abs().max()) for x, y in zip(a, b))


def check_grad_accumulation(accumulate_gradients) -> CheckResult:
    """`accumulate_gradients(model, micro_batches)`: leave in every `p.grad` the gradient of the whole cycle, equal
    to one big batch's (loss averaged over all label tokens). Compared with torch on the big batch."""
    specs = [  # (label, n_micro, micro_batch, seq_len, lengths, stale gradients before the call)
        ("4 micro-batches, no padding", 4, 2, 6, [6] * 8, False),
        ("4 micro-batches, very different padding", 4, 2, 8, [8, 8, 8, 7, 1, 2, 1, 1], False),
        ("1 micro-batch (no accumulation)", 1, 4, 5, None, False),
        ("8 micro-batches of one sequence each", 8, 1, 7, None, False),
        ("3 micro-batches, random padding", 3, 3, 9, None, False),
        ("gradients left over from an earlier step", 2, 2, 6, [6, 2, 5, 1], True),
    ]
    cases = []
    for idx, (what, n_micro, mb, s, lengths, stale) in enumerate(specs):
        def case(idx=idx, what=what, n_micro=n_micro, mb=mb, s=s, lengths=lengths, stale=stale):
            label = f"case {idx + 1}: {what}"
            model = TinyLM(seed=10 + idx)
            batches = make_micro_batches(n_micro, mb, s, seed=20 + idx, lengths=lengths)
            exp = _reference_grads(model, batches, "big")
            before = [p.detach().clone() for p in model.parameters()]
            if stale:
                for p in model.parameters():
                    p.grad = torch.ones_like(p)
            status, got = _call(accumulate_gradients, model, [(i.clone(), lab.clone()) for i, lab in batches])
            if status == "raised":
                return Failure(label, "gradients equal to the big batch's", _raised_text(got))
            if any(not torch.equal(p.detach(), q) for p, q in zip(model.parameters(), before)):
                return Failure(label, "the parameters unchanged", "parameters that moved",
                               "only accumulate gradients here: the optimizer step comes after the cycle")
            grads = _grads(model)
            if any(g is None for g in grads):
                return Failure(label, "a gradient on every parameter", "some p.grad is None",
                               "call backward() on each micro-batch's loss")
            if _same_grads(grads, exp):
                return None
            got_text = f"gradients that differ by up to {_max_diff(grads, exp):.3g}"
            hint = "normalise every micro-batch's summed token loss by the label tokens of the whole cycle"
            if stale and _same_grads(grads, [e + 1 for e in exp]):
                hint = "the old gradients were added to: zero them before the cycle (model.zero_grad())"
            elif _same_grads(grads, _reference_grads(model, batches, "mean_per_micro")):
                hint = ("the token-count pitfall: averaging each micro-batch's mean loss weights tokens unequally "
                        "when micro-batches hold different numbers of label tokens; sum the token losses and divide "
                        "by the label tokens of the whole cycle (transformers PR #34191)")
            elif _same_grads(grads, _reference_grads(model, batches, "sum_of_means")):
                hint = "the micro-batch losses were added up unscaled: normalise by the whole cycle's label tokens"
            elif _same_grads(grads, _reference_grads(model, batches, "per_sequence")):
                hint = "divide by the number of label tokens (padding excluded), not by the number of sequences"
            return Failure(label, "gradients equal to the big batch's", got_text, hint)
        cases.append(case)
    return _run("check_grad_accumulation", cases)


# ---------------------------------------------------------------------------------------------------------------
# 04 — mixed precision
# ---------------------------------------------------------------------------------------------------------------
GPUS = [("a CPU", None, False), ("Tesla T4", (7, 5), True), ("Tesla T4", (7, 5), False), ("V100", (7, 0), True),
        ("P100", (6, 0), False), ("A100", (8, 0), True), ("A10", (8, 6), True), ("L4", (8, 9), True),
        ("H100", (9, 0), True), ("B200", (10, 0), True), ("RTX 5090", (12, 0), True)]


def check_precision(choose_precision) -> CheckResult:
    """`choose_precision(capability, bf16_supported) -> "fp32" | "fp16" | "bf16"`: what "auto" should pick,
    compared with labkit.config.resolve_precision. `bf16_supported` is what torch.cuda.is_bf16_supported() says
    (True on a T4, through emulation); capability None means a CPU."""
    cases = []
    for name, cap, supported in GPUS:
        def case(name=name, cap=cap, supported=supported):
            label = f"choose_precision({cap}, bf16_supported={supported})  # {name}"
            exp = resolve_precision("auto", "cpu" if cap is None else "cuda", cap)
            status, got = _call(choose_precision, cap, supported)
            if status == "raised":
                return Failure(label, repr(exp), _raised_text(got))
            if got == exp:
                return None
            if cap is None:
                hint = "a CPU has no tensor cores to gain from 16-bit: stay in fp32"
            elif got == "bf16" and supported and cap < (8, 0):
                hint = ("the emulation trap: is_bf16_supported() can say True before 8.0 (a T4, a V100), but bf16 "
                        "only runs natively from compute capability 8.0; decide from the capability")
            elif got == "bf16":
                hint = "below compute capability 8.0 there is no native bf16: use fp16 (with loss scaling)"
            elif cap[0] == 8:
                hint = "Ampere and Ada (8.x: A100, A10, L4) have native bf16: compare capability >= (8, 0)"
            elif cap[0] >= 9:
                hint = "newer GPUs have bf16 too: compare the (major, minor) tuple with (8, 0), not the major alone"
            else:
                hint = "compute capability ≥ (8, 0) → bf16; other GPUs → fp16; CPU → fp32"
            return Failure(label, repr(exp), repr(got), hint)
        cases.append(case)
    return _run("check_precision", cases)


FP16_MAX = 65504.0


def fp16_backward_hook(grad: torch.Tensor) -> torch.Tensor:
    """What a 16-bit backward pass does to a gradient: round it to fp16 (values past ±65,504 become inf, values
    below ~6e-8 become 0), then hand it back in the parameter's fp32."""
    return grad.to(torch.float16).to(grad.dtype)


def scaler_run(make_scaler, grads_seq, n_params: int, init_scale: float, growth_interval: int, mine: bool):
    """Train `n_params` fp32 parameter tensors with SGD on the loss Σ p·g (so the true gradient is g), the
    backward rounded to fp16. Returns one (found_inf, scale after update, params) tuple per step."""
    params = [torch.nn.Parameter(torch.ones(len(grads_seq[0][0]))) for _ in range(n_params)]
    for p in params:
        p.register_hook(fp16_backward_hook)
    opt = torch.optim.SGD(params, lr=0.01)
    kw = dict(init_scale=init_scale, growth_factor=2.0, backoff_factor=0.5, growth_interval=growth_interval)
    scaler = make_scaler(**kw) if mine else torch.amp.GradScaler("cpu", **kw)
    trail = []
    for gs in grads_seq:
        opt.zero_grad(set_to_none=True)
        loss = sum((p * torch.tensor(g, dtype=torch.float32)).sum() for p, g in zip(params, gs))
        scaler.scale(loss).backward()
        found = scaler.unscale_(opt)
        if not mine:
            found = not all(bool(torch.isfinite(p.grad).all()) for p in params)
        scaler.step(opt)
        scaler.update()
        trail.append((found, float(scaler.get_scale()), [p.detach().clone() for p in params]))
    return trail


NAN = float("nan")
SCALER_SEQUENCES = [  # (what, init_scale, growth_interval, per step: one gradient list per parameter tensor)
    ("small gradients, an overflow, a nan, then growth", 2.0 ** 16, 3, [
        [[1e-3, -2e-3, 5e-4, 1e-3]],
        [[2e-8, -3e-8, 1e-7, 4e-8]],             # would underflow to 0 in fp16 without the scale
        [[2.0, 0.1, -0.1, 0.0]],                 # 2 × 65536 > 65504 → inf: skip, halve
        [[1e-2, 1e-2, -1e-2, 1e-2]],
        [[NAN, 0.0, 0.0, 0.0]],                  # nan: skip, halve
        [[1e-2, 2e-2, 3e-2, 4e-2]],
        [[1e-2, 2e-2, 3e-2, 4e-2]],
        [[1e-2, 2e-2, 3e-2, 4e-2]],              # third good step in a row → grow
        [[1e-2, 2e-2, 3e-2, 4e-2]],
    ]),
    ("the scale grows until it overflows, again and again", 2.0 ** 14, 2, [[[1.5, -0.5, 0.25, 1.0]]] * 9),
    ("two tensors, inf in only one of them", 2.0 ** 10, 2, [
        [[0.1, 0.2, 0.3], [0.1, 0.1, 0.1]],
        [[0.1, 0.2, 0.3], [100.0, 0.1, 0.1]],    # 100 × 1024 = 102400 → inf in the second tensor only
        [[0.1, 0.2, 0.3], [0.1, 0.1, 0.1]],
        [[0.1, 0.2, 0.3], [0.1, 0.1, 0.1]],
        [[0.1, 0.2, 0.3], [0.1, 0.1, 0.1]],
    ]),
]


def check_loss_scaler(LossScaler) -> CheckResult:
    """`LossScaler(init_scale, growth_factor, backoff_factor, growth_interval)` with `scale(loss)`,
    `unscale_(optimizer) -> found_inf`, `step(optimizer)`, `update()`, `get_scale()`: run side by side with
    torch.amp.GradScaler on the same fp16-rounded gradients; parameters, scale and skip decisions must match."""
    cases = []
    for what, init, interval, seq in SCALER_SEQUENCES:
        def case(what=what, init=init, interval=interval, seq=seq):
            label = f"{what} (init_scale={init:g}, growth_interval={interval}, {len(seq)} steps)"
            n_params = len(seq[0])
            ref = scaler_run(None, seq, n_params, init, interval, mine=False)
            status, mine = _call(scaler_run, LossScaler, seq, n_params, init, interval, True)
            if status == "raised":
                return Failure(label, "the same steps as torch.amp.GradScaler", _raised_text(mine))
            for step, ((f0, s0, p0), (f1, s1, p1)) in enumerate(zip(ref, mine), start=1):
                where = f"{label}, step {step}"
                if not all(bool(torch.isfinite(p).all()) for p in p1):
                    return Failure(where, "finite parameters (the step skipped)", "inf/nan in the parameters",
                                   "skip optimizer.step() when any gradient is inf or nan — check nan too "
                                   "(torch.isfinite), and skip the whole step, not only the bad tensor")
                if not isinstance(f1, bool) or f1 != f0:
                    return Failure(where, f"unscale_ returns {f0}", f"unscale_ returned {f1!r}",
                                   "return True when any unscaled gradient is inf or nan, else False")
                same_params = all(torch.allclose(a, b, rtol=1e-6, atol=1e-9) for a, b in zip(p0, p1))
                if not same_params:
                    moved_ref = sum(float((a - 1).abs().sum()) for a in p0)
                    moved = sum(float((b - 1).abs().sum()) for b in p1)
                    hint = "the update differs from GradScaler's"
                    if moved_ref and moved / moved_ref > 100:
                        hint = "the gradients were not unscaled: divide them by the scale before the step"
                    elif f0 and moved != moved_ref:
                        hint = "after an inf/nan the whole step must be skipped"
                    elif not f0 and moved == 0:
                        hint = "a step with finite gradients must call optimizer.step()"
                    return Failure(where, "parameters equal to GradScaler's", "different parameters", hint)
                if not isinstance(_as_number(s1), float) or s1 != s0:
                    prev = ref[step - 2][1] if step > 1 else init
                    if f0 and s1 == prev:
                        hint = "after a skipped step multiply the scale by backoff_factor"
                    elif not f0 and s1 > s0:
                        hint = ("grow the scale only after growth_interval good steps in a row, and restart that "
                                "count after every skipped step")
                    elif not f0 and s1 < s0:
                        hint = "the scale grows by growth_factor once growth_interval good steps have passed"
                    else:
                        hint = "update(): inf/nan → scale × backoff_factor and restart the count; " \
                               "growth_interval good steps in a row → scale × growth_factor"
                    return Failure(where, f"scale {s0:g}", f"scale {s1!r}", hint)
            return None
        cases.append(case)
    return _run("check_loss_scaler", cases)


# ---------------------------------------------------------------------------------------------------------------
# 05 — QLoRA all together
# ---------------------------------------------------------------------------------------------------------------
BUDGET_KEYS = ("weights_4bit", "weights_16bit", "adapters", "gradients", "optimizer", "activations", "logits")
BUDGET_TOLERANCE = {"weights_4bit": 0.05, "weights_16bit": 0.01, "adapters": 0.005, "gradients": 0.005,
                    "optimizer": 0.08, "activations": 0.005, "logits": 0.01}


def reference_budget(shape: ModelShape, cfg: RunConfig, precision: str = "fp16") -> dict:
    """The exercise's components, taken from labkit.theory.predict_memory."""
    p = theory.predict_memory(shape, cfg, precision)
    return {"weights_4bit": p["quantized_weights"], "weights_16bit": p["unquantized_weights"], "adapters": p["lora"],
            "gradients": p["gradients"], "optimizer": p["optimizer"],
            "activations": p["activations_breakdown"]["checkpoints"], "logits": p["logits"]}


def check_qlora_budget(qlora_budget) -> CheckResult:
    """`qlora_budget(shape, cfg) -> dict` of bytes for an fp16 QLoRA run with checkpointing on a T4, compared
    per component with labkit.theory (4-bit weights within 5%, optimizer within 8%, the rest within 0.5–1%)."""
    specs = [("llama-3.1-8b", dict(micro_batch=1, seq_len=2048)),
             ("llama-3.1-8b", dict(micro_batch=4, seq_len=2048, grad_accum=8)),
             ("llama-3.2-1b", dict(micro_batch=2, seq_len=512, grad_accum=16)),
             ("qwen2.5-0.5b", dict(micro_batch=2, seq_len=1024, lora_targets=("q_proj", "k_proj", "v_proj", "o_proj",
                                                                             "gate_proj", "up_proj", "down_proj"))),
             ("smollm2-360m", dict(micro_batch=4, seq_len=1024, lora_r=32, optim="adamw"))]
    cases = []
    for model, kw in specs:
        shape = PRESETS[model].shape
        cfg = _cfg(model=model, gradient_checkpointing=True, **kw)
        exp = reference_budget(shape, cfg)
        args = ", ".join(f"{k}={v!r}" for k, v in kw.items())
        cases.append(_dict_case(f"qlora_budget({model}, RunConfig({args}))", qlora_budget, (shape, cfg), exp,
                                BUDGET_TOLERANCE, _budget_hint(shape, cfg)))
    return _run("check_qlora_budget", cases)


def _budget_hint(shape: ModelShape, cfg: RunConfig):
    T, h, V, L = cfg.micro_batch * cfg.seq_len, shape.hidden, shape.vocab, shape.layers
    linear = L * sum(a * b for a, b in shape.linear_dims().values())
    n = theory.trainable_params(shape, cfg)
    embed = V * h * 2

    def hint(key, got):
        table = {
            "weights_4bit": [(linear * 2, "the decoder Linears are 4-bit: ½ byte per weight, not 2"),
                             (linear / 2 + embed * (1 if shape.tied else 2) / 4,
                              "bitsandbytes leaves the embeddings and lm_head in 16-bit: only the decoder "
                              "Linears are 4-bit")],
            "weights_16bit": [(embed * 2 if shape.tied else embed / 2,
                               "a tied model stores one embedding matrix, used again as lm_head"
                               if shape.tied else "an untied model stores the embeddings and lm_head: two matrices"),
                              (embed / 2, "the embeddings stay in fp16: 2 bytes per value"),
                              (embed * (1 if shape.tied else 2) * 2, "fp16 is 2 bytes per value, not 4"),
                              (0, "embeddings and lm_head are not quantised; they stay in 16-bit")],
            "adapters": [(n * 2, "peft keeps the LoRA adapters in fp32: 4 bytes per parameter")],
            "gradients": [(n * 2, "gradients of fp32 adapters are fp32: 4 bytes per parameter")],
            "optimizer": [(n * 8, "8-bit Adam keeps each of its two moments in one byte: ≈ 2 bytes per parameter")
                          if cfg.optim != "adamw" else (n * 2, "torch AdamW keeps two fp32 moments: 8 bytes per "
                                                               "parameter"),
                          (n * 16, "the optimizer line is the moments only")],
            "activations": [(T * h * L * 4, "a T4 runs fp16: 2 bytes per saved value"),
                            (T * h * 2, "one checkpointed input per layer: multiply by the layers")],
            "logits": [(T * V * 2, "the loss works on fp32 logits: 4 bytes each, whatever the compute dtype"),
                       (T * h * 4, "the logits have vocab entries per token, not hidden")],
        }
        for value, text in table.get(key, []):
            if _is_number(got) and _close(got, value, 0.05):
                return text
        return {"weights_4bit": "Linear weights × ½ byte, plus the quantisation constants (≈ 0.127 bit/weight "
                                "with double quant)",
                "weights_16bit": "embeddings (vocab × hidden, and lm_head if untied) and norms, 2 bytes each",
                "adapters": "LoRA parameters × 4 bytes", "gradients": "one fp32 gradient per LoRA parameter",
                "optimizer": "moments only: ≈ 2 B/param for 8-bit Adam, 8 B/param for AdamW",
                "activations": "checkpointing keeps one fp16 input per layer: b × s × hidden × layers × 2",
                "logits": "b × s × vocab × 4 bytes (the fp32 log-softmax the loss keeps)"}[key]
    return hint


def check_qlora_kwargs(qlora_kwargs) -> CheckResult:
    """`qlora_kwargs(capability) -> {"bnb": {...}, "lora": {...}, "training": {...}}`: the course recipe for a GPU
    (keyword arguments of BitsAndBytesConfig, LoraConfig and TrainingArguments)."""
    from peft import LoraConfig
    from transformers import BitsAndBytesConfig

    cases = []
    for name, cap in (("Tesla T4", (7, 5)), ("A100", (8, 0)), ("L4", (8, 9)), ("V100", (7, 0))):
        def case(name=name, cap=cap):
            label = f"qlora_kwargs({cap})  # {name}"
            prec = resolve_precision("auto", "cuda", cap)
            dtype = torch.bfloat16 if prec == "bf16" else torch.float16
            status, got = _call(qlora_kwargs, cap)
            if status == "raised":
                return Failure(label, "three dicts of keyword arguments", _raised_text(got))
            if not isinstance(got, dict) or not all(isinstance(got.get(k), dict) for k in ("bnb", "lora", "training")):
                return Failure(label, 'a dict with the dicts "bnb", "lora" and "training"', repr(got)[:200])
            try:
                bnb = BitsAndBytesConfig(**got["bnb"])
            except Exception as e:  # noqa: BLE001
                return Failure(label, "BitsAndBytesConfig(**bnb) to work", _raised_text(e))
            try:
                lora = LoraConfig(**got["lora"])
            except Exception as e:  # noqa: BLE001
                return Failure(label, "LoraConfig(**lora) to work", _raised_text(e))
            t = got["training"]
            ckpt = t.get("gradient_checkpointing", t.get("activation_checkpointing"))
            checks = [  # (ok, what is expected, keys to show, hint)
                (bnb.load_in_4bit is True, "load_in_4bit=True", ["load_in_4bit"], "QLoRA loads the base in 4 bits"),
                (bnb.bnb_4bit_quant_type == "nf4", "bnb_4bit_quant_type='nf4'", ["bnb_4bit_quant_type"],
                 "NormalFloat-4 is QLoRA's data type"),
                (bnb.bnb_4bit_use_double_quant is True, "bnb_4bit_use_double_quant=True",
                 ["bnb_4bit_use_double_quant"], "double quant cuts the constants from 0.5 to ≈ 0.127 bit per weight"),
                (bnb.bnb_4bit_compute_dtype == dtype, f"bnb_4bit_compute_dtype={dtype}", ["bnb_4bit_compute_dtype"],
                 "the 4-bit compute dtype must match the training precision: float16 below compute capability 8.0 "
                 "(bf16 there is the seed's bug), bfloat16 from 8.0"),
                (lora.r == 16 and lora.lora_alpha == 32, "r=16, lora_alpha=32", ["r", "lora_alpha"],
                 "the course's adapter: rank 16, alpha 2r"),
                (set(lora.target_modules or ()) == {"q_proj", "k_proj", "v_proj", "o_proj"},
                 "target_modules=[q_proj, k_proj, v_proj, o_proj]", ["target_modules"],
                 "adapt the four attention projections"),
                (lora.lora_dropout == 0.05 and lora.bias == "none", "lora_dropout=0.05, bias='none'",
                 ["lora_dropout", "bias"], ""),
                (str(getattr(lora.task_type, "value", lora.task_type)) == "CAUSAL_LM", "task_type='CAUSAL_LM'",
                 ["task_type"], ""),
                (t.get("per_device_train_batch_size") == 2 and t.get("gradient_accumulation_steps") == 16,
                 "per_device_train_batch_size=2, gradient_accumulation_steps=16",
                 ["per_device_train_batch_size", "gradient_accumulation_steps"],
                 "micro-batch and accumulation, never a raw batch size: 2 × 16 = 32 (Axolotl rule 1)"),
                (t.get("per_device_eval_batch_size") == t.get("per_device_train_batch_size"),
                 "per_device_eval_batch_size equal to the train micro-batch", ["per_device_eval_batch_size"],
                 "a bigger eval batch changes the memory profile and can OOM after training fit (Axolotl rule 2)"),
                (ckpt is True, "gradient_checkpointing=True", ["gradient_checkpointing"],
                 "recompute activations in backward: an 8B model on a T4 needs it"),
                (bool(t.get("fp16")) == (prec == "fp16") and bool(t.get("bf16")) == (prec == "bf16"),
                 f"fp16={prec == 'fp16'}, bf16={prec == 'bf16'}", ["fp16", "bf16"],
                 "exactly one of fp16/bf16, chosen from the compute capability (bf16 from 8.0)"),
                (t.get("optim") == "paged_adamw_8bit", "optim='paged_adamw_8bit'", ["optim"], "8-bit paged AdamW"),
                (t.get("learning_rate") == 2e-4, "learning_rate=2e-4", ["learning_rate"], ""),
                (t.get("save_strategy") == "steps", "save_strategy='steps'", ["save_strategy"],
                 "save often: an OOM mid-run can corrupt a checkpoint"),
            ]
            for ok, want, keys, hint in checks:
                if not ok:
                    return Failure(label, want, _shown(got, keys), hint)
            return None
        cases.append(case)
    return _run("check_qlora_kwargs", cases)


def _shown(got: dict, keys) -> str:
    out = []
    for k in keys:
        for part in ("bnb", "lora", "training"):
            if k in got[part]:
                out.append(f"{part}[{k!r}]={got[part][k]!r}")
                break
        else:
            out.append(f"{k} not given")
    return ", ".join(out)


# ---------------------------------------------------------------------------------------------------------------
# 06 — debugging OOM
# ---------------------------------------------------------------------------------------------------------------
class FakeGPU:
    """A stand-in GPU for the search exercise: `train_step(n)` raises torch.OutOfMemoryError when n is above a
    hidden limit (a simulated OOM). Until `free_memory()` is called, the memory of that failed try stays held and
    every later try runs out of memory too, as it does on a real GPU when the failed step's tensors are kept."""

    def __init__(self, limit: int, error: Exception | None = None):
        self.limit = limit
        self.error = error
        self.tries: list[int] = []
        self.frees = 0
        self.dirty = False

    def train_step(self, micro_batch: int) -> None:
        self.tries.append(micro_batch)
        if self.error is not None:
            raise self.error
        if self.dirty:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated): the last failed try's memory is still "
                                         "held — nothing freed it")
        if micro_batch > self.limit:
            self.dirty = True
            raise torch.OutOfMemoryError(f"CUDA out of memory (simulated): micro-batch {micro_batch} does not fit")

    def free_memory(self) -> None:
        self.frees += 1
        self.dirty = False


def check_largest_micro_batch(largest_micro_batch) -> CheckResult:
    """`largest_micro_batch(train_step, lo, hi, free_memory) -> int | None`: the largest micro-batch in [lo, hi]
    whose train step runs, found with few tries, recovering from every OOM; None if even lo fails. Other errors
    must not be swallowed."""
    specs = [(10, 1, 64), (64, 1, 64), (1, 1, 64), (0, 1, 64), (37, 1, 128), (5, 4, 8), (3, 4, 8), (1000, 1, 16),
             (23, 1, 1000)]
    cases = []
    for limit, lo, hi in specs:
        def case(limit=limit, lo=lo, hi=hi):
            label = f"largest_micro_batch(train_step, {lo}, {hi}, free_memory)  # fits up to {limit}"
            exp = min(limit, hi) if limit >= lo else None
            gpu = FakeGPU(limit)
            status, got = _call(largest_micro_batch, gpu.train_step, lo, hi, gpu.free_memory)
            allowed = 2 * math.ceil(math.log2(hi - lo + 1)) + 2
            if status == "raised":
                hint = ""
                if isinstance(got, torch.OutOfMemoryError):
                    hint = ("catch torch.OutOfMemoryError around each try, free the memory (free_memory()) and go on"
                            if gpu.frees == 0 else "after an OOM call free_memory() before the next try")
                return Failure(label, repr(exp), _raised_text(got), hint)
            outside = [t for t in gpu.tries if not lo <= t <= hi]
            if outside:
                return Failure(label, f"tries within [{lo}, {hi}]", f"tried {outside[:5]}", "stay between lo and hi")
            if got != exp:
                hint = "keep the largest size that ran and the smallest that failed; bisect between them"
                oom_then_more = any(gpu.tries[i] <= limit for i in range(1, len(gpu.tries))
                                    if any(t > limit for t in gpu.tries[:i]))
                if gpu.frees == 0 and oom_then_more:
                    hint = ("after the first OOM every try failed: the failed step's memory was never freed — call "
                            "free_memory() after catching the OOM")
                return Failure(label, repr(exp), f"{got!r} after trying {gpu.tries}", hint)
            if gpu.dirty:
                return Failure(label, "memory freed after the last OOM", "the last OOM was left unfreed",
                               "call free_memory() after every OOM, the last one too: training runs next")
            if len(gpu.tries) > allowed:
                return Failure(label, f"at most {allowed} tries", f"{len(gpu.tries)} tries",
                               "each try is a real forward + backward: double, then bisect (binary search), "
                               "instead of stepping one by one")
            return None
        cases.append(case)

    def other_errors():
        label = "largest_micro_batch(train_step, 1, 64, free_memory)  # train_step raises a dtype error"
        gpu = FakeGPU(64, error=RuntimeError("expected scalar type Half but found Float"))
        status, got = _call(largest_micro_batch, gpu.train_step, 1, 64, gpu.free_memory)
        if status == "raised" and isinstance(got, RuntimeError) and not isinstance(got, torch.OutOfMemoryError):
            return None
        return Failure(label, "the RuntimeError to propagate", _raised_text(got) if status == "raised" else repr(got),
                       "catch torch.OutOfMemoryError only: any other error is a bug that the search must not hide")
    cases.append(other_errors)
    return _run("check_largest_micro_batch", cases)


AXOLOTL_RULES = {
    1: "set micro_batch_size and gradient_accumulation_steps, not a raw batch_size",
    2: "eval_batch_size must equal micro_batch_size",
    3: "pad_to_sequence_len: true, so every batch has one shape",
    4: "a full fine-tune in fp16 with sample_packing needs flash_attention (or use an adapter)",
    5: "bf16: true needs compute capability ≥ 8.0; use bf16: auto or fp16",
    6: "fp8 gives no speed-up without torch_compile",
}

_RECIPE = {"adapter": "qlora", "micro_batch_size": 2, "gradient_accumulation_steps": 16, "eval_batch_size": 2,
           "pad_to_sequence_len": True, "bf16": "auto", "fp16": None, "sample_packing": False,
           "flash_attention": False, "sdp_attention": True}


def reference_axolotl_problems(cfg: dict, capability) -> set[int]:
    out = set()
    if cfg.get("batch_size") is not None or cfg.get("micro_batch_size") is None \
            or cfg.get("gradient_accumulation_steps") is None:
        out.add(1)
    if cfg.get("eval_batch_size") is not None and cfg.get("eval_batch_size") != cfg.get("micro_batch_size"):
        out.add(2)
    if cfg.get("pad_to_sequence_len") is not True:
        out.add(3)
    if not cfg.get("adapter") and cfg.get("fp16") is True and cfg.get("sample_packing") is True \
            and not cfg.get("flash_attention"):
        out.add(4)
    if cfg.get("bf16") is True and capability is not None and tuple(capability) < (8, 0):
        out.add(5)
    if cfg.get("fp8") is True and not cfg.get("torch_compile"):
        out.add(6)
    return out


AXOLOTL_CASES = [  # (what, changes to the recipe, capability)
    ("the course recipe on a T4", {}, (7, 5)),
    ("a raw batch size", {"batch_size": 32, "micro_batch_size": None, "gradient_accumulation_steps": None}, (7, 5)),
    ("eval batch 8, micro-batch 2", {"eval_batch_size": 8}, (7, 5)),
    ("no eval_batch_size at all (it defaults to the micro-batch)", {"eval_batch_size": None}, (7, 5)),
    ("padding off", {"pad_to_sequence_len": False}, (7, 5)),
    ("full fine-tune, fp16, packing, no flash attention",
     {"adapter": None, "fp16": True, "bf16": False, "sample_packing": True}, (7, 5)),
    ("the same with a LoRA adapter", {"adapter": "lora", "fp16": True, "bf16": False, "sample_packing": True}, (7, 5)),
    ("full fine-tune, fp16, packing, with flash attention",
     {"adapter": None, "fp16": True, "bf16": False, "sample_packing": True, "flash_attention": True}, (8, 0)),
    ("full fine-tune in fp16 without packing", {"adapter": None, "fp16": True, "bf16": False}, (7, 5)),
    ("bf16: true on a T4", {"bf16": True}, (7, 5)),
    ("bf16: true on an A100", {"bf16": True}, (8, 0)),
    ("fp8 without torch_compile", {"fp8": True, "bf16": True}, (9, 0)),
    ("fp8 with torch_compile", {"fp8": True, "bf16": True, "torch_compile": True}, (9, 0)),
    ("three problems at once", {"batch_size": 64, "eval_batch_size": 16, "pad_to_sequence_len": None}, (8, 6)),
]


def check_axolotl_rules(axolotl_problems) -> CheckResult:
    """`axolotl_problems(cfg, capability) -> set of rule numbers` (1–6, see AXOLOTL_RULES) broken by an
    Axolotl-style config dict on a GPU of that compute capability."""
    cases = []
    for what, changes, cap in AXOLOTL_CASES:
        def case(what=what, changes=changes, cap=cap):
            cfg = {k: v for k, v in {**_RECIPE, **changes}.items() if v is not None}
            label = f"{what}: {changes or 'recipe'}, capability {cap}"
            exp = reference_axolotl_problems(cfg, cap)
            status, got = _call(axolotl_problems, dict(cfg), cap)
            if status == "raised":
                return Failure(label, f"rules {sorted(exp)}", _raised_text(got))
            try:
                got_set = {int(x) for x in got}
            except Exception:  # noqa: BLE001
                return Failure(label, f"rules {sorted(exp)}", repr(got)[:200], "return a set of rule numbers")
            if got_set == exp:
                return None
            missed, extra = sorted(exp - got_set), sorted(got_set - exp)
            parts = [f"missed rule {r}: {AXOLOTL_RULES.get(r, '?')}" for r in missed]
            parts += [f"rule {r} does not apply here ({AXOLOTL_RULES.get(r, 'no such rule')})" for r in extra]
            return Failure(label, f"rules {sorted(exp)}", f"rules {sorted(got_set)}", "; ".join(parts))
        cases.append(case)
    return _run("check_axolotl_rules", cases)


# ---------------------------------------------------------------------------------------------------------------
# 07 — the discussion prompts as worked problems
# ---------------------------------------------------------------------------------------------------------------
MIN_SEQ_LEN = 256


def theory_peak(cfg: RunConfig, precision: str = "fp16") -> int:
    return theory.predict_memory(resolve_shape(cfg.model), cfg, precision)["peak"]


def reference_fit(cfg: RunConfig, budget_bytes: int, precision: str = "fp16") -> RunConfig | None:
    """The seed's order: micro-batch first (keeping micro × accum × GPUs), then sequence length, then LoRA rank."""
    fits = lambda c: theory_peak(c, precision) <= budget_bytes  # noqa: E731
    per_gpu = cfg.micro_batch * cfg.grad_accum
    for mb in sorted((d for d in range(1, cfg.micro_batch + 1) if per_gpu % d == 0), reverse=True):
        c = cfg.replace(micro_batch=mb, grad_accum=per_gpu // mb)
        if fits(c):
            return c
    c = cfg.replace(micro_batch=1, grad_accum=per_gpu)
    while c.seq_len // 2 >= MIN_SEQ_LEN:
        c = c.replace(seq_len=c.seq_len // 2)
        if fits(c):
            return c
    while c.lora_r > 1:
        c = c.replace(lora_r=c.lora_r // 2)
        if fits(c):
            return c
    return None


FIT_CASES = [  # (what, config, budget in bytes)
    ("the prompt: 8B, batch 4, seq 2048, accum 8 on a T4", dict(model="llama-3.1-8b", micro_batch=4, seq_len=2048,
                                                                 grad_accum=8), T4_TOTAL_MEMORY - GiB // 2),
    ("the same on a card with 16 GiB free", dict(model="llama-3.1-8b", micro_batch=4, seq_len=2048, grad_accum=8),
     16 * GiB),
    ("1B that already fits", dict(model="llama-3.2-1b", micro_batch=2, seq_len=512, grad_accum=16),
     T4_TOTAL_MEMORY - GiB // 2),
    ("1B, batch 8 × 4 at seq 2048", dict(model="llama-3.2-1b", micro_batch=8, seq_len=2048, grad_accum=4),
     T4_TOTAL_MEMORY - GiB // 2),
    ("8B at seq 8192", dict(model="llama-3.1-8b", micro_batch=2, seq_len=8192, grad_accum=16),
     T4_TOTAL_MEMORY - GiB // 2),
    ("8B on 2 GPUs, 6 × 2 per GPU", dict(model="llama-3.1-8b", micro_batch=6, seq_len=1024, grad_accum=2,
                                          num_gpus=2), T4_TOTAL_MEMORY - GiB // 2),
    ("8B in 6 GiB", dict(model="llama-3.1-8b", micro_batch=1, seq_len=1024, grad_accum=32, lora_r=64), 6 * GiB),
    ("8B in 5 GiB: cannot fit", dict(model="llama-3.1-8b", micro_batch=1, seq_len=1024, grad_accum=32), 5 * GiB),
]


def _cfg_text(c) -> str:
    if not isinstance(c, RunConfig):
        return repr(c)[:200]
    return (f"micro {c.micro_batch} × accum {c.grad_accum} × {c.num_gpus} GPU, seq {c.seq_len}, r {c.lora_r}"
            f" (peak {theory_peak(c) / GiB:.2f} GiB)")


def check_fit_on_t4(fit_on_t4) -> CheckResult:
    """`fit_on_t4(cfg, budget_bytes) -> RunConfig | None`: the first config, in the seed's order of cuts, whose
    theory peak (fp16) fits the budget; the effective batch never changes. Compared with `reference_fit`."""
    cases = []
    for what, kw, budget in FIT_CASES:
        def case(what=what, kw=kw, budget=budget):
            cfg = _cfg(**kw)
            label = f"{what}: {_cfg_text(cfg)}, budget {budget / GiB:.2f} GiB"
            exp = reference_fit(cfg, budget)
            exp_text = _cfg_text(exp) if exp is not None else "None (nothing fits)"
            status, got = _call(fit_on_t4, cfg, budget)
            if status == "raised":
                return Failure(label, exp_text, _raised_text(got))
            if exp is None:
                return None if got is None else Failure(label, exp_text, _cfg_text(got),
                                                        "return None when even the smallest cut does not fit")
            if not isinstance(got, RunConfig):
                return Failure(label, exp_text, repr(got)[:200], "return a RunConfig (cfg.replace(...))")
            if got.effective_batch != cfg.effective_batch:
                return Failure(label, exp_text, _cfg_text(got),
                               f"keep the effective batch at {cfg.effective_batch}: raise the accumulation as you "
                               "lower the micro-batch")
            if theory_peak(got) > budget:
                return Failure(label, exp_text, _cfg_text(got), "that still does not fit the budget")
            if got == exp:
                return None
            if got.seq_len < exp.seq_len or got.lora_r < exp.lora_r:
                hint = "cut the micro-batch first; shorten sequences only when micro-batch 1 does not fit; " \
                       "the LoRA rank last"
            elif got.micro_batch < exp.micro_batch:
                hint = "that cuts more than needed: keep the largest micro-batch that fits"
            else:
                hint = "change only micro_batch/grad_accum, then seq_len (halving), then lora_r (halving)"
            return Failure(label, exp_text, _cfg_text(got), hint)
        cases.append(case)
    return _run("check_fit_on_t4", cases)


def reference_hours(shape: ModelShape, cfg: RunConfig, n_tokens: float, peak_flops: float, mfu: float) -> float:
    f = theory.predict_step_flops(shape, cfg)
    return n_tokens * f["step"] / f["tokens"] / (cfg.num_gpus * peak_flops * mfu) / 3600


def check_training_hours(training_hours) -> CheckResult:
    """`training_hours(shape, cfg, n_tokens, peak_flops, mfu) -> hours` for n_tokens of training on cfg.num_gpus
    GPUs, each delivering mfu × peak_flops, with the FLOPs per token from labkit.theory.predict_step_flops."""
    seven_b = ModelShape("llama", 4096, 11008, 32, 32, 32, 32000, tied=False)
    specs = [("7B on 2×T4, one epoch of 50,000 × 500 tokens", seven_b,
              dict(micro_batch=2, seq_len=512, grad_accum=8, num_gpus=2), 25e6, 65e12, 0.25),
             ("Llama-3.1-8B on a T4, batch 2 × 16", PRESETS["llama-3.1-8b"].shape,
              dict(micro_batch=2, seq_len=2048, grad_accum=16), 10e6, 65e12, 0.3),
             ("Llama-3.1-8B on an A10, batch 8 × 4", PRESETS["llama-3.1-8b"].shape,
              dict(micro_batch=8, seq_len=2048, grad_accum=4), 10e6, 125e12, 0.3),
             ("1B without checkpointing", PRESETS["llama-3.2-1b"].shape,
              dict(micro_batch=4, seq_len=1024, grad_accum=4, gradient_checkpointing=False), 3e6, 121e12, 0.4),
             ("0.5B on 4 GPUs", PRESETS["qwen2.5-0.5b"].shape, dict(micro_batch=8, seq_len=512, grad_accum=2,
                                                                   num_gpus=4), 1e8, 312e12, 0.35)]
    cases = []
    for what, shape, kw, tokens, peak, mfu in specs:
        cfg = _cfg(**kw)
        exp = reference_hours(shape, cfg, tokens, peak, mfu)
        f = theory.predict_step_flops(shape, cfg)
        no_ckpt = theory.predict_step_flops(shape, cfg.replace(gradient_checkpointing=False))
        wrong = {
            "the GPUs share the tokens: divide by num_gpus": exp * cfg.num_gpus if cfg.num_gpus > 1 else None,
            "that is seconds: divide by 3600 for hours": exp * 3600,
            "a GPU delivers mfu × peak FLOP/s, not its peak": exp * mfu,
            "checkpointing adds a forward of the layers: use predict_step_flops for this config": (
                tokens * no_ckpt["step"] / no_ckpt["tokens"] / (cfg.num_gpus * peak * mfu) / 3600
                if cfg.gradient_checkpointing else None),
            "FLOPs per token = step FLOPs / tokens of the step (per GPU)": (
                tokens * f["step"] / (cfg.num_gpus * peak * mfu) / 3600),
        }
        cases.append(_number_case(f"training_hours({what}: {tokens:,.0f} tokens, {peak / 1e12:g} TFLOP/s × {mfu})",
                                  training_hours, (shape, cfg, tokens, peak, mfu), exp, 0.01, wrong,
                                  fmt=lambda v: f"{v:.2f} h" if _is_number(v) else repr(v)))
    return _run("check_training_hours", cases)
