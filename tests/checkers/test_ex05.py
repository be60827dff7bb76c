"""Exercises 05 (QLoRA): the QLoRA budget and recipe checkers against right and wrong answers."""
import pytest

import checker_contract as contract


# ---------------------------------------------------------------------------------------------------------------
# Correct answers (the same logic as the solution notebook)
# ---------------------------------------------------------------------------------------------------------------
def lora_params(shape, r, targets):
    d = shape.linear_dims()
    return shape.layers * sum(r * (d[t][0] + d[t][1]) for t in targets)


def qlora_budget(shape, cfg):
    T = cfg.micro_batch * cfg.seq_len
    linear = shape.layers * sum(i * o for i, o in shape.linear_dims().values())
    n = lora_params(shape, cfg.lora_r, cfg.lora_targets)
    return {"weights_4bit": linear * (0.5 + 0.127 / 8),
            "weights_16bit": shape.vocab * shape.hidden * (1 if shape.tied else 2) * 2,
            "adapters": 4 * n, "gradients": 4 * n, "optimizer": (8 if cfg.optim == "adamw" else 2) * n,
            "activations": T * shape.hidden * shape.layers * 2, "logits": T * shape.vocab * 4}


def qlora_kwargs(cap):
    bf16 = tuple(cap) >= (8, 0)
    return {"bnb": dict(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                        bnb_4bit_compute_dtype="bfloat16" if bf16 else "float16"),
            "lora": dict(r=16, lora_alpha=32, lora_dropout=0.05, bias="none", task_type="CAUSAL_LM",
                         target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]),
            "training": dict(per_device_train_batch_size=2, gradient_accumulation_steps=16,
                             per_device_eval_batch_size=2, gradient_checkpointing=True, fp16=not bf16, bf16=bf16,
                             optim="paged_adamw_8bit", learning_rate=2e-4, save_strategy="steps")}


RIGHT = {"check_qlora_budget": qlora_budget, "check_qlora_kwargs": qlora_kwargs}


# ---------------------------------------------------------------------------------------------------------------
# Plausible wrong answers: (checker, what the learner got wrong, answer, a phrase the hint must contain)
# ---------------------------------------------------------------------------------------------------------------
def _kw(change):
    def answer(cap):
        k = qlora_kwargs(cap)
        change(k)
        return k
    return answer


WRONG = [
    ("check_qlora_budget", "embeddings quantised", lambda s, c: {**qlora_budget(s, c), "weights_16bit": 0},
     "not quantised"),
    ("check_qlora_budget", "tied head counted twice", lambda s, c: {
        **qlora_budget(s, c), "weights_16bit": s.vocab * s.hidden * 4}, "tied model stores one"),
    ("check_qlora_budget", "fp16 logits", lambda s, c: {
        **qlora_budget(s, c), "logits": c.micro_batch * c.seq_len * s.vocab * 2}, "fp32 logits"),
    ("check_qlora_budget", "8-bit Adam as 8 bytes", lambda s, c: {
        **qlora_budget(s, c), "optimizer": 8 * lora_params(s, c.lora_r, c.lora_targets)}, "one byte"),
    ("check_qlora_budget", "fp32 activations", lambda s, c: {
        **qlora_budget(s, c), "activations": c.micro_batch * c.seq_len * s.hidden * s.layers * 4}, "runs fp16"),
    ("check_qlora_budget", "16-bit base", lambda s, c: {
        **qlora_budget(s, c), "weights_4bit": qlora_budget(s, c)["weights_4bit"] / 0.516 * 2}, "½ byte"),
    ("check_qlora_kwargs", "bf16 compute dtype on a T4",
     _kw(lambda k: k["bnb"].update(bnb_4bit_compute_dtype="bfloat16")), "source lesson's bug"),
    ("check_qlora_kwargs", "eval batch 8", _kw(lambda k: k["training"].update(per_device_eval_batch_size=8)),
     "rule 2"),
    ("check_qlora_kwargs", "fp16 and bf16 both on", _kw(lambda k: k["training"].update(fp16=True, bf16=True)),
     "exactly one"),
    ("check_qlora_kwargs", "no double quant", _kw(lambda k: k["bnb"].update(bnb_4bit_use_double_quant=False)),
     "double quant"),
    ("check_qlora_kwargs", "raw batch size", _kw(lambda k: k["training"].update(
        per_device_train_batch_size=32, gradient_accumulation_steps=1)), "never a raw batch size"),
]


# ---------------------------------------------------------------------------------------------------------------
# The checkers
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(RIGHT))
def test_checker_passes_a_right_answer_with_its_fixed_line(name, capsys):
    contract.passes_a_right_answer_with_its_fixed_line(name, RIGHT[name], capsys)


@pytest.mark.parametrize("name", sorted(RIGHT))
def test_checker_says_not_implemented_for_a_stub(name, capsys):
    contract.says_not_implemented_for_a_stub(name, contract.stub, capsys)


@pytest.mark.parametrize("name", sorted(RIGHT))
def test_checker_survives_broken_learner_code(name, capsys):
    contract.survives_broken_learner_code(name, capsys)


@pytest.mark.parametrize("name,what,answer,hint", WRONG, ids=contract.wrong_ids(WRONG))
def test_checker_catches_a_plausible_wrong_answer(name, what, answer, hint, capsys):
    contract.catches_a_plausible_wrong_answer(name, what, answer, hint, capsys)
