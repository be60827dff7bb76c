"""Theory terms: seed figures, NF4 bit counts, and peft itself (on the meta device) as the reference."""

import pytest
import torch

from labkit import theory
from labkit.config import RunConfig
from labkit.shapes import PRESETS, ModelShape

QKVO = ("q_proj", "k_proj", "v_proj", "o_proj")


def test_llama_3_2_1b_trainable_params_is_the_seed_figure():
    shape = PRESETS["llama-3.2-1b"].shape
    n = theory.trainable_params(shape, RunConfig(model="llama-3.2-1b", lora_r=16, lora_targets=QKVO))
    assert n == 3_407_872


@pytest.mark.parametrize("preset", ["llama-3.2-1b", "qwen2.5-0.5b", "smollm2-360m", "llama-3.1-8b"])
@pytest.mark.parametrize("targets", [QKVO, ("q_proj", "v_proj", "gate_proj", "up_proj", "down_proj")])
def test_trainable_params_match_peft_on_the_meta_device(preset, targets):
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    from labkit.engine.models import lora_config

    cfg = RunConfig(model=preset, lora_r=8, lora_targets=targets)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(PRESETS[preset].shape.to_hf_config())
        model = get_peft_model(model, lora_config(cfg))
    peft_count = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert theory.trainable_params(PRESETS[preset].shape, cfg) == peft_count


def test_simple_rule_is_the_seed_7b_figure():
    seven_b = ModelShape("llama", 4096, 11008, 32, 32, 32, 32000, tied=False)
    cfg = RunConfig(model="tiny", micro_batch=1, seq_len=2048)
    assert theory.simple_rule_activations(seven_b, cfg) == 1 * 2048 * 4096 * 32 * 2 == 536_870_912
    assert theory.simple_rule_activations(seven_b, cfg.replace(micro_batch=8)) == 8 * 536_870_912


def test_nf4_bits_per_parameter():
    n = 4096 * 4096
    with_dq = theory.nf4_linear_bytes(n, double_quant=True) * 8 / n
    without = theory.nf4_linear_bytes(n, double_quant=False) * 8 / n
    assert without == pytest.approx(4 + 0.5, abs=1e-3)                      # 32 bits per 64 weights
    assert with_dq == pytest.approx(4 + 8 / 64 + 32 / (64 * 256), abs=1e-3)  # ≈ 4.127


def test_8bit_adam_keeps_small_tensors_in_32_bit():
    shape = PRESETS["tiny"].shape                      # h = 256: A is 8×256 = 2048 < 4096 values
    small = theory.optimizer_bytes(shape, RunConfig(lora_r=8, optim="paged_adamw_8bit"))
    adamw = theory.optimizer_bytes(shape, RunConfig(lora_r=8, optim="adamw"))
    n_tensors = 2 * 4 * shape.layers
    assert small == adamw - 4 * n_tensors               # same 8 B/param, minus torch's step counters
    big = PRESETS["llama-3.1-8b"].shape
    eight_bit = theory.optimizer_bytes(big, RunConfig(model="llama-3.1-8b", optim="paged_adamw_8bit"))
    params = theory.trainable_params(big, RunConfig(model="llama-3.1-8b"))
    assert 2.0 < eight_bit / params < 2.1               # ≈ 2 B/param (+ block absmax)


def test_weights_keep_embeddings_and_head_in_16_bit():
    shape = PRESETS["llama-3.1-8b"].shape
    w = theory.weight_bytes(shape, RunConfig(model="llama-3.1-8b"), "fp16")
    assert w["unquantized_weights"] >= 2 * 128256 * 4096 * 2          # untied: embedding + head, 2 B each
    linear = sum(a * b for a, b in shape.linear_dims().values()) * shape.layers
    assert w["quantized_weights"] / linear == pytest.approx(0.5 + 0.127 / 8, rel=0.01)


def test_checkpointing_keeps_one_layer_input_per_layer():
    shape = PRESETS["llama-3.1-8b"].shape
    cfg = RunConfig(model="llama-3.1-8b", micro_batch=1, seq_len=2048, gradient_checkpointing=True)
    acts = theory.saved_activations(shape, cfg, "fp16")
    assert acts.checkpoints == theory.simple_rule_activations(shape, cfg)   # b·s·h·L·2: the seed's rule
    off = theory.saved_activations(shape, cfg.replace(gradient_checkpointing=False), "fp16")
    assert off.total > 10 * acts.total


def test_logits_can_outweigh_checkpointed_layers_for_a_128k_vocab():
    shape = PRESETS["llama-3.1-8b"].shape
    cfg = RunConfig(model="llama-3.1-8b", micro_batch=1, seq_len=2048, gradient_checkpointing=True)
    assert theory.logits_saved(shape, cfg) > theory.saved_activations(shape, cfg, "fp16").total


def test_checkpointing_costs_about_half_a_step_with_a_frozen_base():
    shape = PRESETS["llama-3.2-1b"].shape
    cfg = RunConfig(model="llama-3.2-1b", seq_len=512)
    on = theory.predict_step_flops(shape, cfg)["step"]
    off = theory.predict_step_flops(shape, cfg.replace(gradient_checkpointing=False))["step"]
    assert 1.35 < on / off < 1.5
    accum8 = theory.predict_step_flops(shape, cfg.replace(grad_accum=8))["step"]
    assert accum8 == pytest.approx(2 * theory.predict_step_flops(shape, cfg)["step"])   # 8 vs default 4


def test_predict_returns_the_record_fields():
    out = theory.predict(PRESETS["tiny"].shape, RunConfig(), "fp32")
    for key in ("weights", "lora", "gradients", "optimizer", "activations", "logits", "peak",
                "simple_rule_activations", "step_flops"):
        assert isinstance(out[key], (int, float)) and out[key] > 0, key
    assert out["peak"] > out["weights"] + out["activations"] + out["logits"]
    assert theory.step_time_at_peak(65e12, "Tesla T4", "fp16") == pytest.approx(1.0)
    assert theory.step_time_at_peak(756e12, "NVIDIA H100 PCIe", "bf16") == pytest.approx(1.0)
    assert theory.step_time_at_peak(989e12, "NVIDIA H100 80GB HBM3", "bf16") == pytest.approx(1.0)
    for unknown in ("NVIDIA L40S", "NVIDIA A10G", "Tesla V100"):
        assert theory.step_time_at_peak(1e12, unknown, "fp16") is None, unknown
    assert theory.step_time_at_peak(1e12, "Tesla T4", "bf16") is None            # no bf16 peak on a T4
    assert theory.step_time_at_peak(1e12, None, "fp32") is None
    with pytest.raises(ValueError):
        theory.predict(PRESETS["tiny"].shape, RunConfig(), "auto")
