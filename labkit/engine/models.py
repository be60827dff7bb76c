"""Loading the model the way the course teaches it: 4-bit base, checkpointing, LoRA adapters.

    BitsAndBytesConfig(nf4, double quant, compute dtype) → from_pretrained(…, dtype=compute dtype)
    → gradient_checkpointing_enable() → get_peft_model(LoraConfig(…))

The same path serves a real checkpoint from the hub (Colab) and a "shape-only" stand-in: offline, a preset is built
from its config with random weights, saved to a local folder, and loaded back through the very same
`from_pretrained`. Memory and time of a shape-only model are real; its loss is not meaningful.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import warnings
from dataclasses import dataclass

import torch

from labkit.config import RunConfig
from labkit.engine import notices
from labkit.shapes import PRESETS, ModelShape, resolve_shape

TORCH_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def cache_dir() -> str:
    """Where shape-only checkpoints are written (LABKIT_CACHE, else ~/.cache/labkit)."""
    return os.environ.get("LABKIT_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "labkit")


_HUB_REACHABLE: bool | None = None


def hub_allowed() -> bool:
    """Hub weights only where the hub answers: offline switches (HF_HUB_OFFLINE, LABKIT_OFFLINE) say no at
    once; otherwise one quick probe per process decides (Colab: yes; these CI machines: no → shape-only)."""
    global _HUB_REACHABLE
    if _HUB_REACHABLE is None:
        from labkit.engine.hardware import hub_status

        _HUB_REACHABLE = hub_status()[0]
    return _HUB_REACHABLE


def shape_only_checkpoint(shape: ModelShape, seed: int = 0, name: str = "model") -> str:
    """Build a random-init model of this shape, save it once, return its folder (reused afterwards)."""
    from transformers import AutoModelForCausalLM

    tag = hashlib.sha1(json.dumps([shape.to_dict(), seed], sort_keys=True).encode()).hexdigest()[:10]
    path = os.path.join(cache_dir(), "shape-only", f"{name}-{tag}")
    if os.path.isfile(os.path.join(path, "config.json")):
        return path
    torch.manual_seed(seed)
    hf_config = shape.to_hf_config()
    with quiet_loading():                      # no "Writing model shards" bar on stderr (red in a notebook)
        model = AutoModelForCausalLM.from_config(hf_config, **dtype_kwarg(torch.bfloat16))  # 16-bit, like the hub
        tmp = path + ".tmp"
        model.save_pretrained(tmp)
    del model
    if not os.path.exists(path):
        os.replace(tmp, path)
    return path


@dataclass
class ModelSource:
    path: str            # what from_pretrained loads
    kind: str            # "hub" | "checkpoint" | "shape-only"
    hub_id: str | None
    shape: ModelShape


WEIGHTS = ("auto", "hub", "random")


def _has_weight_files(model: str) -> bool:
    return os.path.isdir(model) and any(f.endswith((".safetensors", ".bin")) for f in os.listdir(model))


def check_weights(cfg: RunConfig, weights: str) -> None:
    """Refuse, before anything loads, a `weights` choice this model cannot have (ValueError): an unknown word, or
    "hub" (real weights, never a random stand-in) for a model that has none: the tiny stand-in, a bare config.json."""
    if weights not in WEIGHTS:
        raise ValueError(f"weights must be one of {', '.join(WEIGHTS)}, got {weights!r}")
    preset = PRESETS.get(cfg.model)
    real = preset.hub_id is not None if preset else _has_weight_files(cfg.model)
    if weights == "hub" and not real:
        raise ValueError(f"weights='hub' asks for real weights, and model {cfg.model!r} has none "
                         f"({'a preset built locally only' if preset else 'no .safetensors or .bin beside its config'})"
                         "; use weights='auto' or 'random'")


def model_source(cfg: RunConfig, weights: str = "auto") -> ModelSource:
    """Decide what to load. weights: "auto" (hub when allowed and the preset has an id, else shape-only),
    "hub", or "random" (always shape-only)."""
    shape = resolve_shape(cfg.model)
    check_weights(cfg, weights)
    preset = PRESETS.get(cfg.model)
    if preset is None:
        if _has_weight_files(cfg.model) and weights != "random":
            return ModelSource(cfg.model, "checkpoint", None, shape)
        return ModelSource(shape_only_checkpoint(shape, cfg.seed, "custom"), "shape-only", None, shape)
    if preset.hub_id and weights != "random" and (weights == "hub" or hub_allowed()):
        return ModelSource(preset.hub_id, "hub", preset.hub_id, shape)
    return ModelSource(shape_only_checkpoint(shape, cfg.seed, preset.name), "shape-only", None, shape)


def quantization_config(cfg: RunConfig, precision: str):
    """The course's 4-bit recipe; the compute dtype follows the run's precision (float16 on a T4)."""
    from transformers import BitsAndBytesConfig

    if cfg.quant == "none":
        return None
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                              bnb_4bit_compute_dtype=TORCH_DTYPES[precision], bnb_4bit_use_double_quant=True)


def lora_config(cfg: RunConfig):
    from peft import LoraConfig

    return LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, target_modules=list(cfg.lora_targets),
                      lora_dropout=cfg.lora_dropout, bias="none", task_type="CAUSAL_LM")


NON_REENTRANT = {"use_reentrant": False}


def enable_checkpointing(model) -> None:
    """Checkpoint every decoder layer, non-reentrant. transformers 5 calls it `activation_checkpointing_enable`
    (`gradient_checkpointing_enable` still works, with a deprecation warning, and is the only name in 4.x).
    The kwargs are explicit because 4.x defaults to the re-entrant variant, which gives a frozen 4-bit base's
    adapters no gradients unless the embedding output is made to require one."""
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=dict(NON_REENTRANT))
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=dict(NON_REENTRANT))


def dtype_kwarg(dtype) -> dict:
    """`dtype=` in transformers ≥ 4.56, `torch_dtype=` before (Colab may still have an older 4.x)."""
    import transformers
    from packaging.version import Version

    return {"dtype": dtype} if Version(transformers.__version__) >= Version("4.56") else {"torch_dtype": dtype}


def is_checkpointing(model) -> bool:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    flag = getattr(type(base), "is_activation_checkpointing", None)
    return bool(base.is_activation_checkpointing if flag is not None else base.is_gradient_checkpointing)


@contextlib.contextmanager
def quiet_loading():
    """Hide transformers' per-tensor loading and saving bars and the warnings notices.NOTICES silences (lesson
    output stays readable); real errors still raise."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            notices.silence_warnings()
            yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def load_model(cfg: RunConfig, precision: str, device: str = "cpu", weights: str = "auto"):
    """Returns (peft model in train mode, ModelSource). `precision` must be resolved (fp32/fp16/bf16)."""
    from peft import get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM

    src = model_source(cfg, weights)
    torch.manual_seed(cfg.seed)
    with quiet_loading():
        model = AutoModelForCausalLM.from_pretrained(
            src.path, quantization_config=quantization_config(cfg, precision), **dtype_kwarg(TORCH_DTYPES[precision]),
            device_map={"": device}, attn_implementation="sdpa", trust_remote_code=False)
        model.config.use_cache = False                   # no KV cache in training
        if cfg.prepare_kbit:                             # visible option: upcasts norms/embeddings to fp32
            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=cfg.gradient_checkpointing,
                                                    gradient_checkpointing_kwargs=dict(NON_REENTRANT))
        elif cfg.gradient_checkpointing:
            enable_checkpointing(model)
        model = get_peft_model(model, lora_config(cfg))
    model.train()
    return model, src


def tokenizer_for(src: ModelSource):
    """The hub model's own tokenizer, or the kit's byte-level one for shape-only and local models."""
    from labkit.engine import data

    if src.kind == "hub":
        return data.hub_tokenizer(src.hub_id)
    if src.kind == "checkpoint" and os.path.isfile(os.path.join(src.path, "tokenizer_config.json")):
        return data.hub_tokenizer(src.path)
    return data.byte_tokenizer()
