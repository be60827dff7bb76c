"""The HF Trainer path: TrainingArguments from a RunConfig, and a measured run through Trainer on CPU."""
from labkit.config import RunConfig
from labkit.engine.trainer import OPTIM_NAMES, training_arguments, train_with_trainer


def test_training_arguments_follow_the_config(tmp_path):
    cfg = RunConfig(micro_batch=2, grad_accum=16, optim="paged_adamw_8bit", learning_rate=2e-4)
    args = training_arguments(cfg, str(tmp_path), 10, "fp16", "cuda")
    assert args.per_device_train_batch_size == 2
    assert args.gradient_accumulation_steps == 16
    assert args.per_device_eval_batch_size == 2                # Axolotl rule 2: eval batch = micro-batch
    assert args.fp16 and not args.bf16
    assert args.optim.value == OPTIM_NAMES["paged_adamw_8bit"] == "paged_adamw_8bit"
    assert args.learning_rate == 2e-4 and args.max_steps == 10
    bf = training_arguments(cfg.replace(optim="adamw", eval_micro_batch=4), str(tmp_path), 5, "bf16", "cpu")
    assert bf.bf16 and not bf.fp16 and bf.use_cpu
    assert bf.optim.value == "adamw_torch" and bf.per_device_eval_batch_size == 4


def test_trainer_run_is_measured_like_the_runner():
    out = train_with_trainer(RunConfig(seq_len=64, micro_batch=2, grad_accum=2), steps=2, warmup=1)
    m = out.measured
    assert out.status == "ok" and "shape-only" in out.labels
    assert len(m["loss"]) == 2 and len(m["step_times_s"]) == 2    # one loss per optimizer step, not per micro
    assert m["step_time_s"] == m["step_times_s"][1] > 0
