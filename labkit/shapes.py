"""Model shapes: the numbers the theory needs, and the presets the course uses.

A `ModelShape` is a plain description of a Llama-family decoder (Llama, Mistral, Qwen2, SmolLM2 share the layout:
RMSNorm → attention with RoPE and grouped-query heads → RMSNorm → SwiGLU MLP). Both the theory and the model
loader read it; neither measures anything from it.

Preset shapes are copied from each model's published config.json (course brief, "Model shapes").
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass


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
    def from_hf_config(cls, cfg) -> "ModelShape":
        """From a transformers config object or a config.json dict."""
        get = (lambda k, d=None: cfg.get(k, d)) if isinstance(cfg, dict) else (lambda k, d=None: getattr(cfg, k, d))
        model_type = get("model_type")
        if model_type not in ("llama", "mistral", "qwen2"):
            raise ValueError(f"model_type {model_type!r} is not a Llama-family decoder this kit knows "
                             "(llama, mistral, qwen2)")
        heads = get("num_attention_heads")
        rope = get("rope_parameters") or {}
        return cls(
            model_type=model_type, hidden=get("hidden_size"), intermediate=get("intermediate_size"),
            layers=get("num_hidden_layers"), heads=heads, kv_heads=get("num_key_value_heads") or heads,
            vocab=get("vocab_size"), tied=bool(get("tie_word_embeddings", False)),
            head_dim=get("head_dim"), qkv_bias=(model_type == "qwen2") or bool(get("attention_bias", False)),
            rope_theta=float(rope.get("rope_theta", get("rope_theta", 10000.0)) or 10000.0),
            max_position=get("max_position_embeddings", 4096), rms_eps=get("rms_norm_eps", 1e-5),
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


def resolve_shape(model: str) -> ModelShape:
    """Shape of a preset name, a checkpoint folder (its config.json) or a config.json path. ValueError otherwise."""
    if model in PRESETS:
        return PRESETS[model].shape
    path = os.path.join(model, "config.json") if os.path.isdir(model) else model
    if not os.path.isfile(path):
        raise ValueError(f"unknown model {model!r}: not a preset ({', '.join(PRESETS)}), "
                         "nor a checkpoint folder or config.json")
    try:
        with open(path) as f:
            cfg = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"cannot read model config {path}: {e}") from None
    if not isinstance(cfg, dict):
        raise ValueError(f"{path} is not a JSON object")
    missing = [k for k in ("model_type", "hidden_size", "intermediate_size", "num_hidden_layers",
                           "num_attention_heads", "vocab_size") if k not in cfg]
    if missing:
        raise ValueError(f"{path} lacks {', '.join(missing)}: not a Llama-family config.json")
    return ModelShape.from_hf_config(cfg)
