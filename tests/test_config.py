import math

import numpy as np
import pytest

from labkit.config import (FP16_ON_CPU, RunConfig, accumulation_for, native_bf16, resolve_precision,
                           rule_warnings, run_precision_refusal)


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
    # switches are True or False: a word is truthy, so "off" would have switched checkpointing on
    ("gradient_checkpointing", "off", "gradient_checkpointing must be True or False, got 'off' (a word is not a "
                                      "switch)"),
    ("pad_to_seq_len", "false", "pad_to_seq_len must be True or False, got 'false'"),
    ("prepare_kbit", 1, "prepare_kbit must be True or False, got 1 (a number is not a switch)"),
    ("gradient_checkpointing", None, "gradient_checkpointing must be True or False, got None"),
    # counts are integers: not a float, even a whole one, not a string
    ("micro_batch", 2.5, "micro_batch must be an integer ≥ 1, got 2.5"),
    ("micro_batch", 4.0, "got 4.0 (a float: counts are whole numbers, write 4)"),
    ("grad_accum", "3", "grad_accum must be an integer ≥ 1, got '3' (a string)"),
    ("lora_r", True, "lora_r must be an integer ≥ 1, got True"),
    ("eval_micro_batch", 0, "eval_micro_batch must be an integer ≥ 1"),
    ("seed", -1, "seed must be an integer ≥ 0, got -1"),
    ("seed", 1.0, "seed must be an integer ≥ 0"),
    # numbers are finite
    ("lora_alpha", math.nan, "lora_alpha must be finite, got nan"),
    ("lora_alpha", math.inf, "lora_alpha must be finite, got inf"),
    ("lora_alpha", "32", "lora_alpha must be a number > 0, got '32' (a string)"),
    ("lora_alpha", True, "lora_alpha must be a number > 0, got True"),
    ("learning_rate", math.nan, "learning_rate must be finite, got nan"),
    ("learning_rate", math.inf, "learning_rate must be finite, got inf"),
    ("lora_dropout", math.nan, "lora_dropout must be in [0, 1), got nan"),
    ("lora_dropout", False, "lora_dropout must be in [0, 1)"),
    ("memory_budget_gb", math.inf, "memory_budget_gb must be finite, got inf"),
    # words from a list; targets are names
    ("precision", "FP16", "precision must be one of fp32, fp16, bf16, auto, got 'FP16'"),
    ("lora_targets", 5, "lora_targets must be projection names"),
    ("lora_targets", ("q_proj", 3), "lora_targets must be projection names"),
    ("model", None, "model must be a preset name or a path, got None"),
])
def test_bad_values_give_one_clear_error(field, value, words):
    with pytest.raises(ValueError) as e:
        RunConfig(**{field: value})
    assert words in str(e.value)
    assert "\n" not in str(e.value)


def test_replace_checks_like_the_constructor():
    with pytest.raises(ValueError, match="gradient_checkpointing must be True or False"):
        RunConfig().replace(gradient_checkpointing="off")
    with pytest.raises(ValueError, match="unknown RunConfig field.s.: micro_bach"):
        RunConfig().replace(micro_bach=2)


def test_numpy_numbers_are_accepted_and_become_plain_python():
    cfg = RunConfig(micro_batch=np.int64(4), seq_len=np.int32(64), learning_rate=np.float32(1e-4))
    assert type(cfg.micro_batch) is int and cfg.micro_batch == 4 and type(cfg.seq_len) is int
    assert type(cfg.learning_rate) is float
    assert cfg == RunConfig.from_dict(cfg.to_dict())          # a record is JSON: nothing numpy left in it
    cfg = RunConfig(gradient_checkpointing=np.bool_(False))  # numpy's bools count, as its integers do: one rule
    assert cfg.gradient_checkpointing is False


@pytest.mark.parametrize("field, value, said", [
    ("seed", 2 ** 64, "seed must be at most"), ("seq_len", 10 ** 400, "seq_len must be at most"),
    ("micro_batch", 2 ** 40, "micro_batch must be at most"), ("learning_rate", 10 ** 400, "must be finite"),
    ("memory_budget_gb", 10 ** 400, "must be finite"), ("lora_alpha", -(10 ** 400), "must be finite")])
def test_numbers_beyond_what_the_engine_holds_are_refused_in_one_short_line(field, value, said):
    with pytest.raises(ValueError, match=said) as e:
        RunConfig(**{field: value})
    assert len(str(e.value)) < 160 and "\n" not in str(e.value)


@pytest.mark.parametrize("d", [None, "tiny", [("model", "tiny")], 5])
def test_from_dict_takes_a_dict_only(d):
    with pytest.raises(ValueError, match="takes a dict of settings"):
        RunConfig.from_dict(d)


def test_from_dict_reads_targets_written_as_one_string():
    assert RunConfig.from_dict({"lora_targets": "q_proj,v_proj"}).lora_targets == ("q_proj", "v_proj")


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


@pytest.mark.parametrize("precision, device_type, capability, refused", [
    ("bf16", "cuda", (7, 5), "bf16 is not native on this GPU (compute capability 7.5 < 8.0)"),
    ("fp16", "cpu", None, FP16_ON_CPU),
    ("bf16", "cpu", None, None),                  # allowed on a CPU: it shows the memory effect
    ("fp32", "cpu", None, None),
    ("fp16", "cuda", (7, 5), None),
    ("bf16", "cuda", (8, 0), None),
])
def test_one_rule_says_which_precision_a_device_runs(precision, device_type, capability, refused):
    said = run_precision_refusal(precision, device_type, capability)
    assert said == refused if refused is None else said.startswith(refused)


def test_the_cpu_refusal_of_fp16_says_what_the_lab_says():
    from labkit.course.lab_controls import precision_choices
    _, notes = precision_choices("cpu")
    assert any(note.startswith(FP16_ON_CPU.split(";")[0]) for note in notes)


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


@pytest.mark.parametrize("field, value", [("gradient_checkpointing", "off"), ("memory_budget_gb", math.inf),
                                          ("memory_budget_gb", math.nan), ("memory_budget_gb", -1.0)])
def test_the_lab_refuses_a_bad_setting_with_a_message_naming_it(field, value):
    """A widget would raise its own TraitError for "off", and a number box clamps inf to its maximum; the lab
    refuses both before any widget sees them, as RunConfig does, with a sentence for the panel naming the field."""
    from labkit.course.lab_controls import checked_values, live_controls, precision_choices
    controls = live_controls(RunConfig(), on_gpu=False, precision_options=precision_choices("cpu")[0])
    with pytest.raises(ValueError) as lab:
        checked_values(controls, {field: value})
    with pytest.raises(ValueError) as api:
        RunConfig(**{field: value})
    assert str(lab.value).startswith(f"{field} must be") and str(api.value).startswith(f"{field} must be")
    assert "\n" not in str(lab.value)
    assert checked_values(controls, {"memory_budget_gb": None})            # no budget stays allowed
