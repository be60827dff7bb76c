"""The same run through HF `Trainer`: what learners use after the course.

`training_arguments(cfg, …)` turns a RunConfig into `TrainingArguments` (the course recipe, brief §6), and
`MeasureCallback` records what labkit's own runner records: step time (CUDA-synchronised), CUDA peaks per step,
loss per optimizer step. Argument names moved between transformers 4.x (Colab) and 5.x (here): `warmup_ratio`
became a float `warmup_steps`, `gradient_checkpointing` became `activation_checkpointing`; the builder picks
whichever the installed version has.
"""
from __future__ import annotations

import statistics
import tempfile
import types

import torch
from transformers import Trainer, TrainerCallback, TrainingArguments

from labkit.engine import data, measure
from labkit.config import RunConfig
from labkit.engine.models import NON_REENTRANT, load_model, tokenizer_for
from labkit.engine.runner import free_memory, held_before, record_failure, release_failure
from labkit.engine.device import run_setup
from labkit.record import RunRecord, build

OPTIM_NAMES = {"adamw": "adamw_torch", "paged_adamw_8bit": "paged_adamw_8bit"}


def _supported(name: str) -> bool:
    return name in TrainingArguments.__dataclass_fields__


def training_arguments(cfg: RunConfig, output_dir: str, max_steps: int, precision: str, device_type: str,
                       **overrides) -> TrainingArguments:
    """TrainingArguments for this config. `precision` is resolved (fp32/fp16/bf16)."""
    kw = dict(
        output_dir=output_dir,
        per_device_train_batch_size=cfg.micro_batch,           # micro-batch, never a raw batch size (rule 1)
        per_device_eval_batch_size=cfg.eval_micro_batch or cfg.micro_batch,   # eval = micro-batch (rule 2)
        gradient_accumulation_steps=cfg.grad_accum,            # 2 micro × 16 accum × 1 GPU = 32 a step
        learning_rate=cfg.learning_rate,
        lr_scheduler_type="linear",
        optim=OPTIM_NAMES[cfg.optim],
        fp16=precision == "fp16", bf16=precision == "bf16",
        max_steps=max_steps,
        max_grad_norm=1.0,
        weight_decay=0.0,
        logging_steps=1,
        save_strategy="no",                 # a real run saves often: save_strategy="steps", save_steps=…
        report_to="none",
        seed=cfg.seed,
        dataloader_num_workers=0,
        remove_unused_columns=False,
        disable_tqdm=True,
        use_cpu=device_type == "cpu",
    )
    if _supported("warmup_ratio"):
        kw["warmup_ratio"] = 0.03
    else:
        kw["warmup_steps"] = 0.03                              # a float < 1 is a ratio in transformers 5
    # The model arrives from labkit.engine.models.load_model with checkpointing already on (or off) as the config says;
    # telling Trainer the same keeps it from changing anything.
    new_names = _supported("activation_checkpointing")
    kw["activation_checkpointing" if new_names else "gradient_checkpointing"] = cfg.gradient_checkpointing
    if cfg.gradient_checkpointing:    # non-reentrant, as labkit.engine.models does (4.x would default to re-entrant)
        kw["activation_checkpointing_kwargs" if new_names else "gradient_checkpointing_kwargs"] = \
            dict(NON_REENTRANT)
    kw.update(overrides)
    return TrainingArguments(**kw)


class MeasureCallback(TrainerCallback):
    """Step times (synchronised), CUDA peak allocated/reserved per optimizer step, loss per optimizer step."""

    def __init__(self, device: str):
        self.device = device
        self.step_times: list[float] = []
        self.peaks: list[dict] = []
        self.losses: list[float] = []
        self._timer: list[float] = []
        self._ctx = None

    def on_step_begin(self, args, state, control, **kwargs):
        measure.reset_cuda_peak(self.device)
        self._ctx = measure.timed(self.device, self.step_times)
        self._ctx.__enter__()

    def on_step_end(self, args, state, control, **kwargs):
        self._ctx.__exit__(None, None, None)
        self.peaks.append(measure.cuda_peaks(self.device))

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.losses.append(float(logs["loss"]))


def forget_optimizer_overrides(model) -> None:
    """Drop the entries HF Trainer left for `model` in bitsandbytes' process-wide `GlobalOptimManager`.

    With an 8-bit optimizer, `Trainer.create_optimizer` registers every `nn.Embedding` of the model with the manager
    (`register_module_override(module, "weight", {"optim_bits": 32})`, transformers/trainer.py) so embeddings keep
    32-bit optimizer state. The manager is a singleton and never lets go: each Trainer run in a kernel would keep its
    embedding alive for good (128,256 × 2,048 × 2 B ≈ 525 MB for llama-3.2-1b in fp16), failed or not."""
    import sys

    bnb_optim = sys.modules.get("bitsandbytes.optim.optimizer")
    manager = getattr(getattr(bnb_optim, "GlobalOptimManager", None), "_instance", None)
    if model is None or manager is None:
        return
    ours = {id(m) for m in model.modules()}
    manager.module_weight_config_triple = [t for t in manager.module_weight_config_triple if id(t[0]) not in ours]


def train_dataset(tokenizer, cfg: RunConfig, n_rows: int) -> list[dict]:
    """n_rows padded examples (constant length), as plain dicts of 1-D tensors for the default collator."""
    stream = data.batches(tokenizer, data.course_texts(), cfg.seq_len, 1, cfg.pad_to_seq_len, cfg.seed)
    return [{k: v[0] for k, v in next(stream).items()} for _ in range(n_rows)]


def train_with_trainer(cfg: RunConfig, steps: int = 3, warmup: int = 1, device: str | None = None,
                       weights: str = "auto", output_dir: str | None = None) -> RunRecord:
    """Run `steps` optimizer steps through HF Trainer and measure them like `runner.measure_run`: a record with
    the config, where it ran and what was measured (no theory: `labkit.run` puts the theory beside its runs).

    A failure inside training is a result, as in the runner: status "oom" or "error", and the Trainer, its
    accelerator, the model and the optimizer are all released before this returns."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1 or not 0 <= warmup < steps:
        raise ValueError(f"need steps ≥ 1 and 0 ≤ warmup < steps, got steps={steps!r}, warmup={warmup!r}")
    device, dev, precision, labels = run_setup(cfg, device)
    held = held_before(device)
    result = {
        "config": cfg.to_dict(),
        "resolved": {"precision": precision, "device": device}, "device": dev, "model_source": None,
        "labels": labels + held["labels"], "warnings": held["warnings"],
        "measured": {"step_time_s": None, "step_times_s": None, "loss": None, "tokens_per_s": None,
                     "peak_allocated_bytes": None, "peak_reserved_bytes": None,
                     "allocated_before_bytes": held["allocated_before_bytes"],
                     "allocated_before_source": held["allocated_before_source"]},
        "status": "ok", "error": None,
    }
    callback = MeasureCallback(device)
    scope = types.SimpleNamespace()          # the Trainer and the model hang here, so one line drops them
    try:
        with tempfile.TemporaryDirectory() as tmp:
            scope.model, src = load_model(cfg, precision, device, weights)
            result["model_source"] = src.kind
            result["labels"] += ["shape-only"] if src.kind == "shape-only" else []
            rows = train_dataset(tokenizer_for(src), cfg, steps * cfg.grad_accum * cfg.micro_batch)
            args = training_arguments(cfg, output_dir or tmp, steps, precision, dev["type"])
            scope.trainer = Trainer(model=scope.model, args=args, train_dataset=rows, callbacks=[callback])
            scope.trainer.train()
    except BaseException as e:
        release_failure(e)
        if not isinstance(e, Exception):      # KeyboardInterrupt: freed below, then stop as asked
            raise
        record_failure(result, e)
        return build(**result)
    finally:
        forget_optimizer_overrides(getattr(scope, "model", None))
        scope.__dict__.clear()
        free_memory()
    m = result["measured"]
    m["step_times_s"] = times = callback.step_times
    m["step_time_s"] = median = statistics.median(times[warmup:])
    m["loss"] = callback.losses
    m["tokens_per_s"] = cfg.micro_batch * cfg.seq_len * cfg.grad_accum / median
    if dev["type"] == "cuda" and torch.cuda.is_available():
        m["peak_allocated_bytes"] = max(p["peak_allocated_bytes"] for p in callback.peaks)
        m["peak_reserved_bytes"] = max(p["peak_reserved_bytes"] for p in callback.peaks)
    return build(**result)
