"""Op counts: how many aten ops one micro-batch dispatches, predicted from the architecture and the config.

    predict_aten_ops(shape, cfg, precision, device_type="cpu", padding_mask=True, accumulating=False,
                     input_needs_grad=None) -> dict

One micro-batch = the model's forward (loss included), the checkpoint recompute and the backward; the loss
scaling's own multiply, the optimizer step and zero_grad are not in it. The result (theory.aten_ops in a record):

    {"forward": int, "recompute": int, "backward": int, "total": int,   # ops that do work (launch a kernel)
     "metadata": {"forward", "recompute", "backward", "total"},         # views, aliases, detach: a dispatch each,
                                                                        # no kernel, no bytes moved
     "by_kind": {kind: {"forward", "recompute", "backward", "total"}},  # every kind in OP_KINDS, metadata included
     "by_op": {op name: {phase: count}},                                # names as measured.aten_ops writes them
     "device_path": "cpu" | "cuda", "accumulating": bool}

`total` and each phase count the ops that do work; `metadata` is kept apart. Compare `total` with
measured.aten_ops["total"]: both leave the views out. One micro-batch; a step dispatches grad_accum of them.

Kinds (OP_KINDS), for a time model's per-kind costs:
    matmul       mm, addmm and bitsandbytes' gemm_4bit (a 4-bit weight dequantised and multiplied in one op: on
                 CUDA it runs a fused kernel or dequantize + mm, per bitsandbytes' size heuristic)
    attention    the fused scaled-dot-product attention kernels, forward and backward
    elementwise  mul, add, neg, pow, rsqrt, silu, cos, sin, where, dropout's bernoulli_ and div_, backward formulas
    reduction    mean, sum, log-softmax, nll-loss and their backward ops
    dequant      bitsandbytes' dequantize_4bit and dequantize_blockwise (backward re-dequantises each weight)
    copy         casts (_to_copy), clone, cat, padding, embedding, slice_backward, fills and allocations, .item()
    metadata     view, _unsafe_view, t, transpose, slice, unsqueeze, squeeze, expand, alias, detach

How: the recipes below walk the model's forward as transformers 5.x (Llama, Mistral, Qwen2), peft 0.2x and
bitsandbytes 0.50 write it, one `Tape` call per dispatched op (`labkit.theory.op_tape` adds what autograd does:
backward formulas, gradient sums, AccumulateGrad, the checkpoint's early-stopping recompute). Checked op by op on a
CPU against `labkit.engine.op_count` (tests/test_op_counts.py).

Device: `device_type` picks the CPU or CUDA path where they differ. What differs, read from the sources, and
checked on a CPU only (no GPU was at hand when these recipes were written):
- dropout: the CPU composes it (empty_like, bernoulli_, div_, mul; backward mul); CUDA runs one fused
  native_dropout (backward native_dropout_backward);
- peft casts the adapter input to fp32 when `torch.is_autocast_enabled()` (CUDA autocast) is off, so under CPU
  autocast each adapter adds a cast there and back;
- attention: `_scaled_dot_product_flash_attention_for_cpu` on a CPU; on CUDA flash attention without a padding
  mask in 16-bit, memory-efficient attention with a mask; fp32 without a mask (GQA) falls to the math path, which
  is not modelled (the flash counts are used).
bitsandbytes 0.50 dispatches the same ops on both (one gemm_4bit custom op forward; dequantize_blockwise, an
in-place add and dequantize_4bit, then a matmul, in backward). Older bitsandbytes (0.4x) dequantised in forward too.
`input_needs_grad`: whether the embedding output needs a gradient (layer 0 then computes its input gradient).
transformers 5 sets it whenever checkpointing is on (activation_checkpointing_enable → enable_input_require_grads);
4.x only with prepare_kbit (the default None follows 5.x: checkpointing or prepare_kbit).
Not modelled: prepare_kbit's fp32 upcasts of norms and embeddings (extra casts).
"""
from __future__ import annotations

from labkit.config import RunConfig
from labkit.shapes import ModelShape
from labkit.theory.op_recipes import ADD, MUL, TO, VIEW, Setup, cast, decoder_layer, linear, rms_norm, view
from labkit.theory.op_tape import PHASES, Sym, Tape

OP_KINDS = ("matmul", "attention", "elementwise", "reduction", "dequant", "copy", "metadata")

METADATA_OPS = {"aten.view", "aten._unsafe_view", "aten.t", "aten.transpose.int", "aten.slice.Tensor",
                "aten.unsqueeze", "aten.squeeze.dim", "aten.expand", "aten.alias", "aten.detach"}
_KIND_OF = {
    "matmul": {"aten.mm", "aten.addmm", "bitsandbytes.gemm_4bit"},
    "dequant": {"bitsandbytes.dequantize_4bit", "bitsandbytes.dequantize_blockwise"},
    "reduction": {"aten.mean.dim", "aten.sum", "aten.sum.dim_IntList", "aten._log_softmax",
                  "aten._log_softmax_backward_data", "aten.nll_loss_forward", "aten.nll_loss_backward"},
    "copy": {"aten._to_copy", "aten.clone", "aten.cat", "aten.constant_pad_nd", "aten.embedding",
             "aten.slice_backward", "aten.empty_like", "aten.ones_like", "aten.new_ones", "aten.arange",
             "aten.scalar_tensor", "aten._local_scalar_dense", "aten.index.Tensor"},
}


def op_kind(name: str) -> str:
    """The kind of one op name (as the measurement writes it): anything not listed is elementwise."""
    if name in METADATA_OPS:
        return "metadata"
    if "scaled_dot_product" in name:
        return "attention"
    return next((kind for kind, names in _KIND_OF.items() if name in names), "elementwise")


# ---- once per model -------------------------------------------------------------------------------------------------
# The mask and position ops before the first layer (transformers 5.x create_causal_mask, LlamaRotaryEmbedding),
# read off a CPU run; none needs a gradient. Without padding the mask is checked and dropped (SDPA runs causal).
POSITIONS = ["aten.arange", ADD, "aten.unsqueeze"]                 # arange(s) + past, [None]
MASK_CHECK = [TO, "aten.sum", "aten.eq.Scalar", "aten._local_scalar_dense"]     # is the mask all ones?
MASK_BUILD = (["aten.alias", "aten.sum", "aten.eq.Scalar", "aten._local_scalar_dense"]
              + ["aten.arange"] * 3 + [ADD, "aten.arange", ADD] + ["aten.unsqueeze"] * 12
              + ["aten.new_ones", "aten.le.Tensor", "aten.bitwise_and.Tensor", "aten.index.Tensor",
                 "aten.bitwise_and.Tensor", "aten.expand"])         # a (b, 1, s, s) bool mask, by index ops
MASK_SLIDING = ["aten.new_ones", "aten.sub.Tensor", "aten.gt.Tensor", "aten.bitwise_and.Tensor",
                "aten.bitwise_and.Tensor"]                         # Mistral: and the sliding window
ROTARY = ["aten.unsqueeze", TO, MUL, "aten.cat", "aten.cos", MUL, "aten.sin", MUL]   # fp32 cos, sin tables


def _loss(tp: Tape, s: Setup, h: Sym) -> None:
    """lm_head on the final norm's output, then ForCausalLMLoss: logits.float(), labels padded by one and
    shifted, cross-entropy summed (log_softmax, nll_loss) and divided by num_items_in_batch."""
    h = view(tp, "aten.alias", h, [])                           # hidden_states[:, -0:] (logits_to_keep=0)
    logits = linear(tp, h, tp.tensor())                          # frozen lm_head (tied or not)
    if s.low:
        logits = cast(tp, logits)                                # .float()
    tp.plain("aten.constant_pad_nd", "aten.slice.Tensor", "aten.clone", VIEW)   # labels: pad, [..., 1:], view
    logits = view(tp, VIEW, logits, VIEW)
    logp = tp.op("aten._log_softmax", [logits], saved_out=1, backward=["aten._log_softmax_backward_data"])
    loss = tp.op("aten.nll_loss_forward", [logp], saved=[logp, tp.tensor()],     # (and total_weight)
                 backward=["aten.nll_loss_backward"])
    tp.op("aten.div.Tensor", [loss], saved=[tp.tensor()], backward=["aten.div.Tensor"])


def _layer(tp: Tape, s: Setup, input_grad: bool) -> tuple[Tape, bool]:
    """One decoder layer on its own tape, and whether its output needs a gradient. Checkpointed: its forward
    saves through the checkpoint's hook (which keeps the layer input), and backward re-runs it up to its last
    saved tensor."""
    x = tp.tensor(input_grad)
    if not s.cfg.gradient_checkpointing:
        return tp, decoder_layer(tp, s, x).grad
    tp.save(x)
    tp.hooked = True
    out = decoder_layer(tp, s, x)
    tp.hooked = False
    tp.begin_recompute()
    decoder_layer(tp, s, x)
    tp.end_recompute()
    return tp, out.grad


def _walk(tp: Tape, s: Setup) -> None:
    """The whole micro-batch: embedding, positions and mask, the layers (checkpointed ones re-run in backward),
    the final norm, the loss; `tp.finish()` adds the autograd engine's own ops."""
    tp.plain("aten.embedding")                                    # frozen table
    x = tp.grad_leaf() if s.input_grad else tp.tensor()           # a hook makes the output need a gradient
    tp.plain(*POSITIONS, *MASK_CHECK, *ROTARY)
    if s.padding:
        tp.plain(*MASK_BUILD)
        if s.shape.model_type == "mistral":      # MistralConfig's sliding_window defaults to 4096 (ModelShape does
            tp.plain(*MASK_SLIDING)              # not record it; a config with none builds the plain mask)
    if s.low:
        tp.plain(TO, TO)                                          # cos, sin to the compute dtype
    walked: dict[bool, tuple[Tape, bool]] = {}                    # every layer alike but for its input's grad
    for _ in range(s.shape.layers):
        if x.grad not in walked:
            walked[x.grad] = _layer(tp.part(), s, x.grad)
        part, out_grad = walked[x.grad]
        tp.add(part)
        x = tp.tensor(out_grad)
    _loss(tp, s, rms_norm(tp, s, x))


def _phases(counts: dict, names) -> dict:
    out = {p: sum(n for op, n in counts[p].items() if op in names) for p in PHASES}
    return {**out, "total": sum(out.values())}


def predict_aten_ops(shape: ModelShape, cfg: RunConfig, precision: str, device_type: str = "cpu",
                     padding_mask: bool = True, accumulating: bool = False,
                     input_needs_grad: bool | None = None, saved_tensor_hooks: bool = False) -> dict:
    """The aten ops one micro-batch dispatches (keys: see the module docstring). `precision` is the resolved
    one (fp32, fp16, bf16): 16-bit runs under autocast; fp16 also scales the loss (GradScaler), whose multiply's
    gradient is one more op in backward. `padding_mask`: the batch has padding (a mask is built and used).
    `saved_tensor_hooks`: the micro-batch ran under saved-tensor hooks (the kit's saved-bytes meter, on the first
    micro-batch of a run): autograd then detaches every tensor it unpacks rather than every output it saves. Only
    the metadata count changes; the ops that do work are the same."""
    if input_needs_grad is None:
        input_needs_grad = cfg.gradient_checkpointing or cfg.prepare_kbit
    s = Setup(shape, cfg, low=precision in ("fp16", "bf16"), cuda=device_type == "cuda", padding=padding_mask,
               nf4=cfg.quant == "nf4", input_grad=input_needs_grad)
    tp = Tape(accumulating, hooks=saved_tensor_hooks)
    _walk(tp, s)
    counts = tp.finish()
    if precision == "fp16":
        counts["backward"][MUL] += 1                              # d(loss · scale): grad · scale
    names = set().union(*counts.values())
    by_kind = {kind: _phases(counts, {n for n in names if op_kind(n) == kind}) for kind in OP_KINDS}
    work = _phases(counts, {n for n in names if op_kind(n) != "metadata"})
    return {**work, "metadata": by_kind["metadata"], "by_kind": by_kind,
            "by_op": {n: {p: counts[p][n] for p in PHASES if counts[p][n]} for n in sorted(names)},
            "device_path": "cuda" if s.cuda else "cpu", "accumulating": accumulating}
