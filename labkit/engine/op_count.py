"""Counting the aten ops a micro-step really dispatches: forward, checkpoint recompute, backward.

Why count ops at all: on a GPU that waits for Python and kernel launches, a step's time follows the number of ops
more than their FLOPs. This module counts them from the live run; nothing here knows the theory (a test checks that
the engine never imports it), so the count can be held against the theory's prediction (`theory.aten_ops`).

How: a `TorchDispatchMode` sees every op that reaches the dispatcher below autograd, forward and backward alike
(the autograd engine's own ops included: gradient sums, `AccumulateGrad`). A custom op (bitsandbytes'
`gemm_4bit`, `dequantize_4bit`) counts once: the ops its kernel calls run with the mode switched off.

Phases. The caller says when the forward ends and the backward begins (`counter.phase = "backward"`). Inside the
backward, an op counts as "recompute" when it belongs to activation checkpointing's re-run of a layer: it runs
inside some module's forward (global module forward hooks see the re-run's submodules), or with grad mode on while
the engine is executing a node (the re-run is under `enable_grad`; backward formulas run with grad off). Neither
test alone is enough: an autograd Function's forward (bitsandbytes' MatMul4Bit) runs with grad off even in a
re-run, and the decoder layer's own forward is re-run without its module hooks.

Metadata ops (views, aliases, `detach`, `t`, `_unsafe_view`) are counted on their own: they cost a dispatch but
launch no kernel. `total` and the three phases count the other ops, the ones that do work; `metadata` holds the
same split for the views.

    with OpCounter() as ops:
        out = model(**batch)                  # phase "forward"
        ops.phase = "backward"
        out.loss.backward()                   # "backward", or "recompute" inside a re-run module forward
    ops.summary()   # {"forward", "recompute", "backward", "total", "metadata": {...}, "by_op": {...}}

Counting costs a Python call per op (a few microseconds each, thousands of ops in a micro-step), so the runner
counts one micro-step per run, the first, never a timed one unless the run has no warm-up.
"""
from __future__ import annotations

import threading
from collections import Counter
from contextlib import contextmanager

import torch

from labkit.record import PHASES

_local = threading.local()


@contextmanager
def uncounted():
    """Ops dispatched inside this block are not counted: the kit's own bookkeeping (the SavedTensorMeter's
    `detach`), which the training step itself would not run."""
    _local.depth = getattr(_local, "depth", 0) + 1
    try:
        yield
    finally:
        _local.depth -= 1


def op_name(func) -> str:
    """'aten.mm.default' → 'aten.mm'; 'aten.add.Tensor' stays (the overload tells add(Tensor) from add(Scalar));
    custom ops keep their namespace: 'bitsandbytes.gemm_4bit'."""
    name = str(func)
    return name[: -len(".default")] if name.endswith(".default") else name


def is_metadata(func) -> bool:
    """An op whose output is a view of its input (schema alias, not written): view, t, transpose, slice, expand,
    unsqueeze, detach, alias … and `_unsafe_view`, a view that the schema does not mark as one."""
    return bool(getattr(func, "is_view", False)) or op_name(func) == "aten._unsafe_view"


class OpCounter:
    """Counts dispatched aten ops by phase and by op name while the block runs (see the module docstring)."""

    def __init__(self):
        self.phase = "forward"
        self.counts: dict[str, Counter] = {p: Counter() for p in PHASES}
        self.metadata_ops: set[str] = set()
        self._names: dict = {}
        self._module_depth = 0
        self._mode = None
        self._hooks = []

    # module forwards running (to tell a recompute inside backward) -----------------------------------------------
    def _enter_module(self, module, args):
        self._module_depth += 1

    def _leave_module(self, module, args, output):
        self._module_depth -= 1

    def _recomputing(self) -> bool:
        """Inside backward, is this op part of a re-run forward? Yes inside any module's forward (checkpointing
        re-runs the layer's modules), and yes for an op run with grad mode on while the engine executes a node:
        backward formulas run with grad off, a recompute under `enable_grad` (the decoder layer's own forward,
        e.g. its residual adds, is re-run without its module hooks: transformers checkpoints `forward`, not
        `__call__`)."""
        return self._module_depth > 0 or (torch.is_grad_enabled()
                                          and torch._C._current_autograd_node() is not None)

    def _count(self, func) -> None:
        if getattr(_local, "depth", 0):
            return
        phase = self.phase
        if phase == "backward" and self._recomputing():
            phase = "recompute"
        name = self._names.get(func)
        if name is None:                                  # first time this op is seen: name it, classify it
            name = self._names[func] = op_name(func)
            if is_metadata(func):
                self.metadata_ops.add(name)
        self.counts[phase][name] += 1

    def _mode_class(self):
        from torch.utils._python_dispatch import TorchDispatchMode

        counter = self

        class _Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                counter._count(func)
                return func(*args, **(kwargs or {}))

        return _Mode

    def __enter__(self):
        from torch.nn.modules import module as nn_module

        self._module_depth = 0
        self._hooks = [nn_module.register_module_forward_pre_hook(self._enter_module),
                       nn_module.register_module_forward_hook(self._leave_module, always_call=True)]
        self._mode = self._mode_class()()
        self._mode.__enter__()
        return self

    def __exit__(self, *exc):
        try:
            self._mode.__exit__(*exc)
        finally:
            for h in self._hooks:
                h.remove()
            self._hooks = []
        return False

    # results ------------------------------------------------------------------------------------------------------
    def summary(self) -> dict:
        """What a record keeps under measured.aten_ops: ops that do work per phase and their total, the metadata
        ops (views) the same way, and every op name with its count per phase (phases with none left out)."""
        work = {p: sum(n for op, n in self.counts[p].items() if op not in self.metadata_ops) for p in PHASES}
        meta = {p: sum(n for op, n in self.counts[p].items() if op in self.metadata_ops) for p in PHASES}
        names = sorted(set().union(*self.counts.values()))
        by_op = {op: {p: self.counts[p][op] for p in PHASES if self.counts[p][op]} for op in names}
        return {**work, "total": sum(work.values()),
                "metadata": {**meta, "total": sum(meta.values())},
                "metadata_ops": sorted(self.metadata_ops),
                "by_op": by_op}
