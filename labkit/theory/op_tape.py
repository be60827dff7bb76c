"""A paper autograd: the bookkeeping that turns a model's forward code into the ops forward, recompute and backward
dispatch, without running anything.

The recipes in `labkit.theory.ops` walk the model's forward as the source code does, one call per dispatched op.
Each call says which tensors go in, which of them autograd keeps for backward, and which ops the backward formula
dispatches (`torch/csrc/autograd/FunctionsManual.cpp`, `tools/autograd/derivatives.yaml`). The tape adds what
autograd does around them:

- a node exists only when an input needs a gradient; then its backward ops run once, in the backward phase;
- a tensor that several nodes consume gets its gradients summed: uses − 1 `add` ops in backward (the engine's
  InputBuffer);
- each trainable leaf ends in AccumulateGrad: it stores the first gradient (a `detach`) or, when .grad already
  holds one (`accumulating`), adds into it (`add_`);
- saving an output that needs a gradient costs a `detach` when saved and another when unpacked in backward (no
  saved-tensor hooks; a checkpointed layer's forward saves through its hook, which dispatches nothing);
- a checkpointed layer is re-run inside backward ("recompute"): every tensor its forward saves is packed again,
  `detach`ed if it needs a gradient, and the re-run stops as soon as the last one is packed (torch's early stop).
  Inputs are packed before their op runs and outputs after, so an op whose inputs are the last to be saved is not
  re-run at all (SwiGLU's final product, when down_proj has no adapter).
"""
from __future__ import annotations

from collections import Counter

from labkit.record import PHASES

DETACH = "aten.detach"


class Sym:
    """A tensor on paper: whether it needs a gradient, and how many backward nodes send it one."""
    __slots__ = ("grad", "uses")

    def __init__(self, grad: bool = False):
        self.grad = grad
        self.uses = 0


class Tape:
    def __init__(self, accumulating: bool = False, hooks: bool = False):
        self.counts = {p: Counter() for p in PHASES}
        self.phase = "forward"
        self.hooks = hooks           # saved-tensor hooks on throughout the forward (a meter's)
        self.hooked = False          # inside a checkpointed layer's forward: packs go to checkpoint's hook
        self.accumulating = accumulating
        self._syms: list[Sym] = []
        self._params = 0
        self._events: list | None = None

    # tensors ----------------------------------------------------------------------------------------------------
    def tensor(self, grad: bool = False) -> Sym:
        s = Sym(grad)
        self._syms.append(s)
        return s

    def grad_leaf(self) -> Sym:
        """A leaf made to need a gradient (the embedding output under enable_input_require_grads): a new tensor
        each micro-batch, so AccumulateGrad always stores its gradient (a detach)."""
        if self.phase == "forward":
            self.counts["backward"][DETACH] += 1
        return self.tensor(True)

    def param(self) -> Sym:
        """A trainable leaf (a LoRA matrix): AccumulateGrad at the end of backward."""
        if self.phase == "forward":
            self._params += 1
        return self.tensor(True)

    # ops --------------------------------------------------------------------------------------------------------
    def _dispatch(self, name: str, n: int = 1) -> None:
        if self._events is not None:
            self._events += [("op", name)] * n
        else:
            self.counts[self.phase][name] += n

    def save(self, s: Sym) -> None:
        """Autograd keeps `s` for a node that dispatches nothing (checkpoint's NoopSaveInputs keeps a layer's
        inputs)."""
        self._pack(s, output=False)

    def _pack(self, s: Sym, output: bool) -> None:
        if self._events is not None:                        # recompute: checkpoint's recomputation hook
            self._events.append(("pack", s.grad))
        elif s.grad and (self.hooked or self.hooks):        # a hook keeps what it likes (checkpoint: a
            self.counts["backward"][DETACH] += 1            # placeholder); backward detaches what it unpacks
        elif s.grad and output:                             # SavedVariable of an output: detach now, and again
            self.counts["forward"][DETACH] += 1             # when backward unpacks it
            self.counts["backward"][DETACH] += 1

    def op(self, name: str, inputs=(), saved=(), saved_out: bool = False, saved_aux: int = 0, backward=(),
           grad: bool | None = None) -> Sym:
        """One dispatched op. `inputs`: the tensors that may carry a gradient; `saved`: those of them autograd
        keeps; `saved_out`: it keeps its result too; `saved_aux`: how many other outputs it keeps, which need no
        gradient (attention's logsumexp, dropout's mask); `backward`: the ops its backward formula dispatches
        (given which inputs need gradients: the recipe decides); `grad`: whether the result needs one (default:
        any input does)."""
        node = any(i.grad for i in inputs)
        if node:
            for s in saved:
                self._pack(s, output=False)
        self._dispatch(name)
        out = self.tensor(node if grad is None else grad)
        if node:
            if saved_out:
                self._pack(out, output=True)
            for _ in range(saved_aux):
                self._pack(Sym(False), output=True)
            if self.phase == "forward":
                for op_name in backward:
                    self.counts["backward"][op_name] += 1
                for i in inputs:
                    if i.grad:
                        i.uses += 1
        return out

    def plain(self, *names: str) -> None:
        """Ops that make no autograd node (nothing they touch needs a gradient)."""
        for name in names:
            self._dispatch(name)

    # checkpoint recompute ---------------------------------------------------------------------------------------
    def begin_recompute(self) -> None:
        self.phase, self._events = "recompute", []

    def end_recompute(self) -> None:
        """Keep the re-run up to its last pack (early stop): its ops, and a detach per packed tensor that needs a
        gradient."""
        events, self._events = self._events, None
        last = max((k for k, e in enumerate(events) if e[0] == "pack"), default=-1)
        for kind, what in events[:last + 1]:
            if kind == "op":
                self.counts["recompute"][what] += 1
            elif what:
                self.counts["recompute"][DETACH] += 1
        self.phase = "forward"

    # parts walked once, counted many times ---------------------------------------------------------------------
    def part(self) -> "Tape":
        """A tape for one repeated part (a decoder layer): walk it once, then `add` it as many times as it
        occurs. A part's tensors are its own, so its gradient sums close within it."""
        return Tape(self.accumulating, self.hooks)

    def add(self, part: "Tape", times: int = 1) -> None:
        part._close()
        for p in PHASES:
            for name, n in part.counts[p].items():
                self.counts[p][name] += n * times

    def _close(self) -> None:
        """The engine's ops for this tape's own tensors: the sums of gradients of tensors used more than once,
        and AccumulateGrad for every trainable leaf (once)."""
        b = self.counts["backward"]
        b["aten.add.Tensor"] += sum(max(0, s.uses - 1) for s in self._syms if s.grad)
        b["aten.add_.Tensor" if self.accumulating else DETACH] += self._params
        self._syms, self._params = [], 0

    # the end of backward ----------------------------------------------------------------------------------------
    def finish(self) -> dict[str, Counter]:
        """Add what the autograd engine itself dispatches: the loss's starting gradient (ones), the sums of
        gradients of tensors used more than once, and AccumulateGrad for every trainable leaf."""
        self._close()
        self.counts["backward"]["aten.ones_like"] += 1                # loss.backward(): the gradient 1
        return self.counts
