"""Fixtures: what the checkers build their cases on and the exercise notebooks use too.

Models, batches and GPUs small enough for a CPU (`TinyLM`, `make_micro_batches`, `FakeGPU`), the fp16 training
loop a loss scaler is tried in (`scaler_run`), the cost models the exercises hand the learner (`segment_memory`,
`theory_peak`), and shapes to test on. Nothing here is an answer to an exercise.
"""
from __future__ import annotations

import math
import random

import torch

from labkit import theory
from labkit.config import RunConfig
from labkit.engine.hardware import T4_TOTAL_MEMORY  # noqa: F401 — what Colab's T4 reports (14.75 GiB), re-exported
from labkit.shapes import PRESETS, ModelShape, resolve_shape

FP16_MAX = 65504.0                        # the largest finite fp16 value; past it a value becomes inf

SEVEN_B = ModelShape("llama", 4096, 11008, 32, 32, 32, 32000, tied=False)    # the source lesson's 7B example


# ---------------------------------------------------------------------------------------------------------------
# Model shapes
# ---------------------------------------------------------------------------------------------------------------
def shape_text(shape: ModelShape) -> str:
    """A preset's name, or the shape's numbers when it is no preset."""
    for name, preset in PRESETS.items():
        if preset.shape == shape:
            return name
    return (f"ModelShape(h={shape.hidden}, i={shape.intermediate}, L={shape.layers}, heads={shape.heads}, "
            f"kv={shape.kv_heads}, V={shape.vocab}{', tied' if shape.tied else ''})")


def random_shape(rng: random.Random) -> ModelShape:
    """A Llama-style shape with whole heads (hidden = head_dim × heads) and kv_heads dividing heads."""
    hd = rng.choice([32, 64, 128])
    heads = rng.choice([4, 8, 12, 16])
    kv = rng.choice([h for h in (1, 2, 4, heads) if heads % h == 0])
    inter = rng.choice([2, 3, 4]) * hd * heads + 64 * rng.randint(0, 4)
    return ModelShape("llama", hidden=hd * heads, intermediate=inter,
                      layers=rng.randint(2, 40), heads=heads, kv_heads=kv, vocab=rng.choice([32000, 49152, 50257]),
                      tied=rng.random() < 0.5, head_dim=hd)


# ---------------------------------------------------------------------------------------------------------------
# Cost models the exercises hand the learner
# ---------------------------------------------------------------------------------------------------------------
def segment_memory(layers: int, k: int, input_bytes: float, layer_bytes: float) -> float:
    """Chen et al.'s scheme: keep the inputs of k segments, and during backward recompute one segment of
    ⌈L / k⌉ layers with all its activations."""
    return k * input_bytes + math.ceil(layers / k) * layer_bytes


def theory_peak(cfg: RunConfig, precision: str = "fp16") -> int:
    """The theory's peak memory in bytes for `cfg` (fp16 unless told)."""
    return theory.predict_memory(resolve_shape(cfg.model), cfg, precision)["peak"]


# ---------------------------------------------------------------------------------------------------------------
# A tiny language model and its micro-batches (gradient accumulation)
# ---------------------------------------------------------------------------------------------------------------
class TinyLM(torch.nn.Module):
    """A very small next-token model (embedding → tanh layer → vocabulary head) for the accumulation exercises."""

    def __init__(self, vocab: int = 29, dim: int = 12, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.embed = torch.nn.Embedding(vocab, dim)
        self.mix = torch.nn.Linear(dim, dim)
        self.head = torch.nn.Linear(dim, vocab)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)

    def forward(self, input_ids):
        return self.head(torch.tanh(self.mix(self.embed(input_ids))))


def make_micro_batches(n_micro: int, micro_batch: int, seq_len: int, vocab: int = 29, seed: int = 0,
                       lengths=None):
    """`n_micro` micro-batches of (input_ids, labels), labels already aligned with the outputs. Positions past a
    sequence's length are padding: label -100, which the loss ignores. `lengths` (one per sequence, flattened
    over the micro-batches) defaults to random lengths between 1 and seq_len."""
    g = torch.Generator().manual_seed(seed)
    total = n_micro * micro_batch
    if lengths is None:
        lengths = torch.randint(1, seq_len + 1, (total,), generator=g).tolist()
    if len(lengths) != total:
        raise ValueError(f"need {total} lengths, got {len(lengths)}")
    out = []
    for m in range(n_micro):
        ids = torch.randint(0, vocab, (micro_batch, seq_len), generator=g)
        labels = torch.randint(0, vocab, (micro_batch, seq_len), generator=g)
        for row in range(micro_batch):
            labels[row, lengths[m * micro_batch + row]:] = -100
        out.append((ids, labels))
    return out


def grads_of(model) -> list:
    """A copy of every parameter's gradient (None where there is none), in parameter order."""
    return [None if p.grad is None else p.grad.detach().clone() for p in model.parameters()]


# ---------------------------------------------------------------------------------------------------------------
# fp16 training with a loss scaler (mixed precision)
# ---------------------------------------------------------------------------------------------------------------
def fp16_backward_hook(grad: torch.Tensor) -> torch.Tensor:
    """What a 16-bit backward pass does to a gradient: round it to fp16 (values past ±65,504 become inf, values
    below ~6e-8 become 0), then hand it back in the parameter's fp32."""
    return grad.to(torch.float16).to(grad.dtype)


def scaler_run(make_scaler, grads_seq, n_params: int, init_scale: float, growth_interval: int, mine: bool):
    """Train `n_params` fp32 parameter tensors with SGD on the loss Σ p·g (so the true gradient is g), the
    backward rounded to fp16. Returns one (found_inf, scale after update, params) tuple per step."""
    params = [torch.nn.Parameter(torch.ones(len(grads_seq[0][0]))) for _ in range(n_params)]
    for p in params:
        p.register_hook(fp16_backward_hook)
    opt = torch.optim.SGD(params, lr=0.01)
    kw = dict(init_scale=init_scale, growth_factor=2.0, backoff_factor=0.5, growth_interval=growth_interval)
    scaler = make_scaler(**kw) if mine else torch.amp.GradScaler("cpu", **kw)
    trail = []
    for gs in grads_seq:
        opt.zero_grad(set_to_none=True)
        loss = sum((p * torch.tensor(g, dtype=torch.float32)).sum() for p, g in zip(params, gs))
        scaler.scale(loss).backward()
        found = scaler.unscale_(opt)
        if not mine:
            found = not all(bool(torch.isfinite(p.grad).all()) for p in params)
        scaler.step(opt)
        scaler.update()
        trail.append((found, float(scaler.get_scale()), [p.detach().clone() for p in params]))
    return trail


# ---------------------------------------------------------------------------------------------------------------
# A GPU that runs out of memory (debugging OOM)
# ---------------------------------------------------------------------------------------------------------------
class FakeGPU:
    """A stand-in GPU for the search exercise: `train_step(n)` raises torch.OutOfMemoryError when n is above a
    hidden limit (a simulated OOM). Until `free_memory()` is called, the memory of that failed try stays held and
    every later try runs out of memory too, as it does on a real GPU when the failed step's tensors are kept."""

    def __init__(self, limit: int, error: Exception | None = None):
        self.limit = limit
        self.error = error
        self.tries: list[int] = []
        self.frees = 0
        self.dirty = False

    def train_step(self, micro_batch: int) -> None:
        self.tries.append(micro_batch)
        if self.error is not None:
            raise self.error
        if self.dirty:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated): the last failed try's memory is still "
                                         "held — nothing freed it")
        if micro_batch > self.limit:
            self.dirty = True
            raise torch.OutOfMemoryError(f"CUDA out of memory (simulated): micro-batch {micro_batch} does not fit")

    def free_memory(self) -> None:
        self.frees += 1
        self.dirty = False
