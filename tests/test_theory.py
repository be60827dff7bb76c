"""Theory terms: seed figures, NF4 bit counts, and peft itself (on the meta device) as the reference."""

import pytest
import torch

from labkit import theory
from labkit.theory.activations import layer_saved as layer_saved
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
    assert acts.checkpoints == theory.simple_rule_activations(shape, cfg)   # b·s·h·L·2: the source lesson's rule
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


# ---- the peak ----------------------------------------------------------------------------------------------------
MiB = 2 ** 20
ALL7 = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def test_cublas_workspace_follows_torchs_rules():
    assert theory.cublas_workspace_bytes((7, 5)) == 8 * MiB + 128 * 1024          # ":4096:2:16:8" (T4)
    assert theory.cublas_workspace_bytes((8, 0)) == 8 * MiB + 128 * 1024          # A100
    assert theory.cublas_workspace_bytes((9, 0)) == 32 * MiB                      # ":4096:8" (Hopper)
    assert theory.cublas_workspace_bytes((7, 5), {"CUBLAS_WORKSPACE_CONFIG": ":4096:8"}) == 32 * MiB
    assert theory.cublas_workspace_bytes((9, 0), {"CUBLAS_WORKSPACE_CONFIG": ":16:8"}) == 128 * 1024
    assert theory.cublas_workspace_bytes((9, 0), {"CUBLAS_WORKSPACE_CONFIG": ":4096:2:16:8"}) == 8 * MiB + 128 * 1024
    assert theory.cublas_workspace_bytes((9, 0), {"CUBLAS_WORKSPACE_CONFIG": "oops"}) == 32 * MiB   # default
    assert theory.cublaslt_workspace_bytes((9, 0)) == MiB                                      # 1024 KiB
    assert theory.cublaslt_workspace_bytes((9, 0), {"CUBLAS_WORKSPACE_CONFIG": ":16:8"}) == 128 * 1024   # capped
    assert theory.cublaslt_workspace_bytes((9, 0), {"TORCH_CUBLASLT_UNIFIED_WORKSPACE": "1"}) == 0        # shared
    assert theory.cublaslt_workspace_bytes(
        (9, 0), {"CUBLASLT_WORKSPACE_SIZE": "65536", "TORCH_CUBLASLT_UNIFIED_WORKSPACE": "0"}) == 64 * MiB
    assert theory.cuda_workspace_bytes("cuda", (9, 0)) == 2 * (32 + 1) * MiB     # two threads' handles
    assert theory.cuda_workspace_bytes("cuda", [7, 5]) == 2 * (8 * MiB + 128 * 1024 + MiB)
    assert theory.cuda_workspace_bytes("cpu", (9, 0)) == 0


def test_the_allocator_counts_512_byte_blocks():
    assert [theory.cuda_rounded(n) for n in (1, 4, 512, 513, 4096)] == [512, 512, 512, 1024, 4096]


@pytest.mark.parametrize("preset", ["tiny", "llama-3.2-1b", "qwen2.5-0.5b", "llama-3.1-8b"])
@pytest.mark.parametrize("optim", ["adamw", "paged_adamw_8bit"])
@pytest.mark.parametrize("targets", [QKVO, ALL7])
def test_resident_tensors_add_up_to_the_components(preset, optim, targets):
    shape = PRESETS[preset].shape
    cfg = RunConfig(model=preset, optim=optim, lora_targets=targets)
    t = theory.resident_tensors(shape, cfg, "fp16")
    w = theory.weight_bytes(shape, cfg, "fp16")
    assert sum(t["quantized_weights"]) == w["quantized_weights"]
    assert sum(t["unquantized_weights"]) == w["unquantized_weights"]
    assert sum(t["lora"]) == sum(t["gradients"]) == theory.trainable_params(shape, cfg) * 4
    assert sum(t["optimizer"]) + sum(t["outside_allocator"]) == theory.optimizer_bytes(shape, cfg)


def test_paged_8bit_states_of_1e5_values_are_not_in_the_cuda_allocator():
    shape = PRESETS["llama-3.1-8b"].shape                       # gate/up/down adapters: 16 × 14336 ≥ 1e5 values
    cfg = RunConfig(model="llama-3.1-8b", lora_targets=ALL7)
    cpu, _ = theory.resident_at_peak(shape, cfg, "fp16", "cpu")
    cuda, _ = theory.resident_at_peak(shape, cfg, "fp16", "cuda")
    paged = 32 * 3 * 2 * 16 * 14336                              # layers × adapters × 2 uint8 states × numel
    assert cpu - cuda == paged
    qkvo = cfg.replace(lora_targets=QKVO)                        # none that large: nothing paged
    assert theory.resident_at_peak(shape, qkvo, "fp16", "cpu")[0] == theory.resident_at_peak(
        shape, qkvo, "fp16", "cuda")[0]


def test_peak_is_the_largest_phase_on_top_of_the_base():
    shape = PRESETS["llama-3.2-1b"].shape
    cfg = RunConfig(model="llama-3.2-1b", seq_len=512, micro_batch=2, grad_accum=4, gradient_checkpointing=True)
    p = theory.predict_memory(shape, cfg, "fp16", True, "cuda", (9, 0))
    base = sum(p["peak_breakdown"][k] for k in ("resident", "batch", "cuda_workspace", "allocator_rounding"))
    assert p["peak"] == base + max(p["peak_phases"].values())
    assert p["peak_phase"] == "loss_backward"
    assert p["cuda_workspace"] == 66 * MiB
    # the old rule added the logit buffers AND a recomputed layer; they never coexist
    assert p["peak"] < (p["weights"] + p["lora"] + p["gradients"] + p["optimizer"] + p["activations"] + p["logits"]
                        + p["logits_transient"] + p["recompute"])


@pytest.mark.parametrize("gc,phase", [(True, "layer_backward"), (False, "final_norm_backward")])
def test_small_vocabulary_peaks_in_the_layers(gc, phase):
    cfg = RunConfig(seq_len=128, micro_batch=4, grad_accum=1, gradient_checkpointing=gc)
    assert theory.predict_memory(PRESETS["tiny"].shape, cfg, "fp16", False)["peak_phase"] == phase


@pytest.mark.parametrize("precision,per_logit", [("fp32", 16), ("bf16", 14), ("fp16", 14)])
def test_loss_backward_holds_logits_log_softmax_and_two_fp32_gradients(precision, per_logit):
    """out.logits (c) + saved log-softmax (4) + nll_loss_backward's and log_softmax_backward's gradients (4 + 4)."""
    shape = PRESETS["llama-3.2-1b"].shape
    cfg = RunConfig(model="llama-3.2-1b", seq_len=512, micro_batch=1)
    loss = theory.peak_phases(shape, cfg, precision)["loss_backward"]
    T, V = 512, shape.vocab
    logit_sized = loss["logits"] + loss["loss_saved"] - (T * 8 + 4) + loss["logit_grads"]
    assert logit_sized == per_logit * T * V


def test_gradients_count_at_the_peak_from_the_second_micro_batch():
    shape = PRESETS["llama-3.2-1b"].shape
    one = RunConfig(model="llama-3.2-1b", seq_len=512, micro_batch=1, grad_accum=1)
    four = one.replace(grad_accum=4)
    grads = theory.trainable_params(shape, one) * 4
    batch_diff = theory.batch_bytes(four) - theory.batch_bytes(one)
    assert theory.predict_memory(shape, four, "fp16")["peak"] - theory.predict_memory(shape, one, "fp16")["peak"] \
        == grads + batch_diff


def test_fp32_recompute_does_not_count_the_checkpointed_input_twice():
    shape = PRESETS["tiny"].shape
    cfg = RunConfig(seq_len=64, micro_batch=2, gradient_checkpointing=True)
    layer = layer_saved(shape, cfg, "fp32", False, "cpu", first=False)
    assert theory.recompute_bytes(shape, cfg, "fp32", False) == layer - 2 * 64 * shape.hidden * 4
    assert theory.recompute_bytes(shape, cfg, "bf16", False) == layer_saved(shape, cfg, "bf16", False, "cpu",
                                                                                    first=False)
