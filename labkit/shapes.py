"""Model shapes: the numbers the theory needs, and the presets the course uses.

A `ModelShape` is a plain description of a Llama-family decoder (Llama, Mistral, Qwen2, SmolLM2 share the layout:
RMSNorm → attention with RoPE and grouped-query heads → RMSNorm → SwiGLU MLP). Both the theory and the model
loader read it; neither measures anything from it.

Preset shapes are copied from each model's published config.json (course brief, "Model shapes").
"""
from __future__ import annotations

import json
import numbers
import os
import warnings
from dataclasses import asdict, dataclass

from labkit.config import LabkitWarning, is_finite, shorten


@dataclass(frozen=True)
class ModelShape:
    model_type: str          # "llama" | "mistral" | "qwen2"
    hidden: int              # h
    intermediate: int        # i (SwiGLU width)
    layers: int              # L
    heads: int               # query heads
    kv_heads: int            # key/value heads (GQA when < heads)
    vocab: int               # V
    tied: bool               # lm_head shares the embedding matrix
    head_dim: int | None = None   # None = hidden / heads
    qkv_bias: bool = False   # Qwen2 has biases on q, k, v
    rope_theta: float = 10000.0
    max_position: int = 4096
    rms_eps: float = 1e-5

    @property
    def hd(self) -> int:
        return self.head_dim or self.hidden // self.heads

    def linear_dims(self) -> dict[str, tuple[int, int]]:
        """(d_in, d_out) of every Linear in one decoder layer."""
        h, i, hd = self.hidden, self.intermediate, self.hd
        return {
            "q_proj": (h, self.heads * hd), "k_proj": (h, self.kv_heads * hd), "v_proj": (h, self.kv_heads * hd),
            "o_proj": (self.heads * hd, h),
            "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h),
        }

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_hf_config(cls, cfg, where: str = "model config") -> "ModelShape":
        """From a transformers config object or a config.json dict, checked field by field (`check_model_config`)."""
        if not isinstance(cfg, dict) and hasattr(cfg, "to_dict"):      # a transformers PretrainedConfig
            cfg = {k: getattr(cfg, k) for k in CONFIG_FIELDS if getattr(cfg, k, None) is not None}
        check_model_config(cfg, where)
        get = cfg.get
        model_type = get("model_type")
        heads = get("num_attention_heads")
        rope = get("rope_parameters") or {}
        return cls(
            model_type=model_type, hidden=get("hidden_size"), intermediate=get("intermediate_size"),
            layers=get("num_hidden_layers"), heads=heads, kv_heads=get("num_key_value_heads") or heads,
            vocab=get("vocab_size"), tied=bool(get("tie_word_embeddings", False)),
            head_dim=get("head_dim"), qkv_bias=(model_type == "qwen2") or bool(get("attention_bias", False)),
            rope_theta=float(rope.get("rope_theta", get("rope_theta", 10000.0)) or 10000.0),
            max_position=get("max_position_embeddings") or 4096, rms_eps=get("rms_norm_eps") or 1e-5,
        )

    def to_hf_config(self):
        """A transformers config with these numbers (random-init models and meta-device checks use it)."""
        import transformers
        cls = {"llama": transformers.LlamaConfig, "mistral": transformers.MistralConfig,
               "qwen2": transformers.Qwen2Config}[self.model_type]
        kw = dict(hidden_size=self.hidden, intermediate_size=self.intermediate, num_hidden_layers=self.layers,
                  num_attention_heads=self.heads, num_key_value_heads=self.kv_heads, vocab_size=self.vocab,
                  tie_word_embeddings=self.tied, max_position_embeddings=self.max_position,
                  rms_norm_eps=self.rms_eps, head_dim=self.hd, rope_theta=self.rope_theta)
        if self.model_type == "llama":
            kw["attention_bias"] = self.qkv_bias
        return cls(**kw)


# ---- checking a config.json ------------------------------------------------------------------------------------------
MODEL_TYPES = ("llama", "mistral", "qwen2")
REQUIRED = ("model_type", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "vocab_size")
OPTIONAL_COUNTS = ("num_key_value_heads", "head_dim", "max_position_embeddings")
# The MLP's activation: elementwise, between gate and up (SwiGLU with silu in every preset). The theory counts one
# saved tensor of the gate's size for it, which holds for each of these; anything else is refused, not guessed.
ACTIVATIONS = ("silu", "swish", "gelu", "gelu_new", "gelu_fast", "gelu_pytorch_tanh", "relu")
CONFIG_FIELDS = REQUIRED + OPTIONAL_COUNTS + ("hidden_act", "tie_word_embeddings", "attention_bias", "rope_theta",
                                             "rope_parameters", "rms_norm_eps")


def _shown(value) -> str:
    """A value as the config.json wrote it, cut to one readable line (a 400-digit number, a long string)."""
    return shorten(json.dumps(value) if isinstance(value, (type(None), bool, int, float, str)) else repr(value))


# The largest a config.json's counts may be: well past today's largest open models (hidden 16384, 126 layers,
# a 256k vocabulary), small enough that the theory's walk over the layers and its float products stay quick.
COUNT_MAXIMA = {"hidden_size": 2 ** 17, "intermediate_size": 2 ** 20, "num_hidden_layers": 2 ** 12,
                "num_attention_heads": 2 ** 12, "num_key_value_heads": 2 ** 12, "vocab_size": 2 ** 23,
                "head_dim": 2 ** 14, "max_position_embeddings": 2 ** 26}


def _count(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= 1


def check_model_config(cfg: dict, where: str = "model config") -> None:
    """Check a config.json (as a dict) field by field; ValueError naming the first bad field.

    Every count positive (hidden_size, intermediate_size, num_hidden_layers, num_attention_heads, vocab_size, and
    num_key_value_heads, head_dim, max_position_embeddings when given); the heads divide: num_key_value_heads
    divides num_attention_heads (each key/value head serves whole groups), and without head_dim, hidden_size is
    num_attention_heads × head size (4096 = 32 × 128); rms_norm_eps and rope_theta finite and > 0; hidden_act one
    of ACTIVATIONS. Both the theory (estimate) and the model loader read shapes through here."""
    if not isinstance(cfg, dict):
        raise ValueError(f"{where} is not a JSON object")
    missing = [k for k in REQUIRED if k not in cfg]
    if missing:
        raise ValueError(f"{where} lacks {', '.join(missing)}: not a Llama-family config.json")
    if cfg["model_type"] not in MODEL_TYPES:
        raise ValueError(f"{where}: model_type {cfg['model_type']!r} is not a Llama-family decoder this kit knows "
                         f"({', '.join(MODEL_TYPES)})")
    for key in REQUIRED[1:] + OPTIONAL_COUNTS:
        if key in cfg and not (key in OPTIONAL_COUNTS and cfg[key] is None) and not _count(cfg[key]):
            raise ValueError(f"{where}: {key} must be a positive integer, got {_shown(cfg[key])}")
        if key in cfg and cfg[key] is not None and cfg[key] > COUNT_MAXIMA.get(key, 2 ** 24):
            raise ValueError(f"{where}: {key} {_shown(cfg[key])} is beyond any model this kit describes (at most "
                             f"{COUNT_MAXIMA.get(key, 2 ** 24):,})")
    heads, kv = cfg["num_attention_heads"], cfg.get("num_key_value_heads") or cfg["num_attention_heads"]
    if heads % kv:
        raise ValueError(f"{where}: num_key_value_heads {kv} does not divide num_attention_heads {heads} "
                         "(each key/value head serves a whole group of query heads)")
    if cfg.get("head_dim") is None and cfg["hidden_size"] % heads:
        raise ValueError(f"{where}: hidden_size {cfg['hidden_size']} is not divisible by num_attention_heads "
                         f"{heads} (and no head_dim is given)")
    rope = cfg.get("rope_parameters") or {}
    if not isinstance(rope, dict):
        raise ValueError(f"{where}: rope_parameters must be an object, got {_shown(rope)}")
    for key, value in (("rms_norm_eps", cfg.get("rms_norm_eps")),
                       ("rope_theta", rope.get("rope_theta", cfg.get("rope_theta")))):
        if value is not None and (not is_finite(value) or value <= 0):
            raise ValueError(f"{where}: {key} must be a finite number > 0, got {_shown(value)}")
    act = cfg.get("hidden_act", "silu")
    if act not in ACTIVATIONS:
        raise ValueError(f"{where}: hidden_act {_shown(act)} is not an activation this kit knows "
                         f"({', '.join(ACTIVATIONS)})")
    for key in ("tie_word_embeddings", "attention_bias"):
        if cfg.get(key) is not None and not isinstance(cfg[key], bool):
            raise ValueError(f"{where}: {key} must be true or false, got {_shown(cfg[key])}")


# ---- advice about a run on a shape -----------------------------------------------------------------------------------
def fit_warnings(shape: ModelShape, seq_len: int, lora_r: int, lora_targets=("q_proj",)) -> list[str]:
    """Settings that run but say something is off: a sequence beyond the positions the model was trained on, a
    LoRA rank above what a targeted layer can hold (a d_in × d_out layer has rank ≤ min(d_in, d_out))."""
    out = []
    if seq_len > shape.max_position:
        out.append(f"seq_len {seq_len} is beyond the model's {shape.max_position} positions "
                   "(max_position_embeddings): memory and time still measure, but the model never saw such "
                   "positions")
    dims = shape.linear_dims()
    ranks = {t: min(dims[t]) for t in lora_targets if t in dims}
    if ranks and lora_r > min(ranks.values()):
        name = min(ranks, key=ranks.get)
        out.append(f"lora_r {lora_r} is above the rank {name} can have (min{dims[name]} = {ranks[name]}; "
                   f"hidden size {shape.hidden}): the extra rank adds memory, not capacity")
    return out


def warn_fit(cfg, stacklevel: int = 2, shape: ModelShape | None = None) -> list[str]:
    """`fit_warnings` for a RunConfig, each also issued as a LabkitWarning (pointing `stacklevel` frames up, as
    `warnings.warn` counts them from the caller); returns them (records keep them). `shape`: the model's, if the
    caller has resolved it already."""
    out = fit_warnings(shape or resolve_shape(cfg.model), cfg.seq_len, cfg.lora_r, cfg.lora_targets)
    for text in out:
        warnings.warn(text, LabkitWarning, stacklevel=stacklevel + 1)
    return out


@dataclass(frozen=True)
class Preset:
    name: str
    shape: ModelShape
    hub_id: str | None   # ungated hub repository with the real weights; None = built locally only
    note: str = ""


PRESETS: dict[str, Preset] = {p.name: p for p in [
    Preset("tiny", ModelShape("llama", hidden=256, intermediate=688, layers=4, heads=8, kv_heads=4, vocab=384,
                              tied=False, head_dim=32, max_position=2048),
           None, "course stand-in: random init, byte-level tokenizer; a CPU step takes well under a second"),
    Preset("llama-3.2-1b", ModelShape("llama", 2048, 8192, 16, 32, 8, 128256, tied=True, head_dim=64,
                                      rope_theta=500000.0, max_position=131072),
           "unsloth/Llama-3.2-1B-Instruct", "ungated copy of meta-llama/Llama-3.2-1B-Instruct"),
    Preset("llama-3.1-8b", ModelShape("llama", 4096, 14336, 32, 32, 8, 128256, tied=False, head_dim=128,
                                      rope_theta=500000.0, max_position=131072),
           "unsloth/Meta-Llama-3.1-8B-Instruct", "ungated copy of meta-llama/Llama-3.1-8B-Instruct"),
    Preset("qwen2.5-0.5b", ModelShape("qwen2", 896, 4864, 24, 14, 2, 151936, tied=True, head_dim=64, qkv_bias=True,
                                      rope_theta=1000000.0, max_position=32768, rms_eps=1e-6),
           "Qwen/Qwen2.5-0.5B-Instruct"),
    Preset("smollm2-360m", ModelShape("llama", 960, 2560, 32, 15, 5, 49152, tied=True, head_dim=64,
                                      rope_theta=100000.0, max_position=8192),
           "HuggingFaceTB/SmolLM2-360M-Instruct"),
]}


# config.json fields of two small non-Llama shapes (random weights, built locally) that the tests and benchmarks run
# the theory against: Qwen2's grouped-query attention with tied embeddings, Mistral's without
CHECK_CONFIGS = {
    "qwen2-style": {"model_type": "qwen2", "hidden_size": 192, "intermediate_size": 512, "num_hidden_layers": 2,
                    "num_attention_heads": 6, "num_key_value_heads": 2, "vocab_size": 512,
                    "tie_word_embeddings": True},
    "mistral-style": {"model_type": "mistral", "hidden_size": 256, "intermediate_size": 640,
                      "num_hidden_layers": 2, "num_attention_heads": 8, "num_key_value_heads": 2,
                      "vocab_size": 320, "tie_word_embeddings": False},
}


def write_check_configs(folder) -> dict[str, str]:
    """Each of CHECK_CONFIGS as `<folder>/<name>.json`; {name: path}, a path `RunConfig(model=…)` accepts."""
    import json
    import os

    paths = {}
    for name, fields in CHECK_CONFIGS.items():
        paths[name] = os.path.join(str(folder), f"{name}.json")
        with open(paths[name], "w", encoding="utf-8") as f:
            json.dump(fields, f)
    return paths


def resolve_shape(model: str) -> ModelShape:
    """Shape of a preset name, a checkpoint folder (its config.json) or a config.json path. ValueError otherwise."""
    if model in PRESETS:
        return PRESETS[model].shape
    path = os.path.join(model, "config.json") if os.path.isdir(model) else model
    if not os.path.isfile(path):
        raise ValueError(f"unknown model {model!r}: not a preset ({', '.join(PRESETS)}), "
                         "nor a checkpoint folder or config.json")
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read(MAX_CONFIG_CHARS + 1)
        if len(text) > MAX_CONFIG_CHARS:
            raise ValueError(f"over {MAX_CONFIG_CHARS // 1024} KiB, far more than a config.json holds")
        cfg = json.loads(text)
    except RecursionError:
        raise ValueError(f"cannot read model config {path}: nested deeper than a config.json is") from None
    except (OSError, ValueError) as e:                # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise ValueError(f"cannot read model config {path}: {e}") from None
    return ModelShape.from_hf_config(cfg, where=path)


MAX_CONFIG_CHARS = 1 << 20       # a Llama-family config.json is a few KiB
