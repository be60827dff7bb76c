import pytest

from labkit.config import (RunConfig, accumulation_for, native_bf16, resolve_precision, rule_warnings)


def test_effective_batch_arithmetic():
    cfg = RunConfig(micro_batch=2, grad_accum=16, num_gpus=1)
    assert cfg.effective_batch == 32
    assert cfg.effective_batch_text == "2 micro × 16 accum × 1 GPU = 32"
    assert RunConfig(micro_batch=8, grad_accum=4, num_gpus=2).effective_batch == 64


@pytest.mark.parametrize("field,value,words", [
    ("micro_batch", 0, "micro_batch must be an integer ≥ 1"),
    ("grad_accum", -1, "grad_accum must be an integer ≥ 1"),
    ("seq_len", 4, "seq_len must be an integer ≥ 8"),
    ("num_gpus", 1.5, "num_gpus must be an integer"),
    ("micro_batch", True, "micro_batch must be an integer"),
    ("precision", "fp8", "precision must be one of"),
    ("quant", "int3", "quant must be one of"),
    ("optim", "sgd", "optim must be one of"),
    ("lora_targets", ("q_proj", "qkv"), "unknown LoRA target(s) qkv"),
    ("lora_targets", (), "at least one projection"),
    ("lora_targets", ("q_proj", "q_proj"), "twice"),
    ("lora_dropout", 1.0, "lora_dropout must be in [0, 1)"),
    ("lora_alpha", 0, "lora_alpha must be > 0"),
    ("learning_rate", -1e-4, "learning_rate must be > 0"),
    ("memory_budget_gb", 0, "memory_budget_gb must be > 0"),
    ("model", "", "model must be"),
])
def test_bad_values_give_one_clear_error(field, value, words):
    with pytest.raises(ValueError) as e:
        RunConfig(**{field: value})
    assert words in str(e.value)
    assert "\n" not in str(e.value)


def test_targets_accept_a_comma_string_and_round_trip():
    cfg = RunConfig(lora_targets="q_proj, v_proj")
    assert cfg.lora_targets == ("q_proj", "v_proj")
    assert RunConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.key() == RunConfig.from_dict(cfg.to_dict()).key()
    with pytest.raises(ValueError, match="unknown RunConfig field"):
        RunConfig.from_dict({"batch_size": 8})


def test_accumulation_for_follows_axolotl_rule_1():
    assert accumulation_for(32, 2, 1) == 16
    assert accumulation_for(32, 8, 1) == 4
    assert accumulation_for(64, 4, 2) == 8
    with pytest.raises(ValueError, match="not a multiple"):
        accumulation_for(30, 4, 1)


def test_precision_comes_from_compute_capability():
    t4, a100 = (7, 5), (8, 0)
    assert native_bf16(a100) and not native_bf16(t4)
    assert resolve_precision("auto", "cuda", t4) == "fp16"
    assert resolve_precision("auto", "cuda", a100) == "bf16"
    assert resolve_precision("auto", "cpu", None) == "fp32"
    assert resolve_precision("bf16", "cpu", None) == "bf16"
    assert resolve_precision("fp16", "cuda", t4) == "fp16"
    with pytest.raises(ValueError, match="not native on this GPU .compute capability 7.5"):
        resolve_precision("bf16", "cuda", t4)


def test_rule_warnings():
    assert rule_warnings(RunConfig()) == []
    warns = rule_warnings(RunConfig(eval_micro_batch=8, pad_to_seq_len=False, quant="none"))
    assert any("Axolotl rule 2" in w for w in warns)
    assert any("Axolotl rule 3" in w for w in warns)
    assert any("not QLoRA" in w for w in warns)
    assert rule_warnings(RunConfig(eval_micro_batch=2, micro_batch=2)) == []


def test_every_field_has_help():
    import dataclasses
    assert all(f.metadata.get("help") for f in dataclasses.fields(RunConfig))
