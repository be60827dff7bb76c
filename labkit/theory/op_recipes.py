"""One decoder layer's ops, recipe by recipe: what each module's forward dispatches, what autograd keeps, what
its backward formula dispatches. Each function follows the source it names (transformers 5.x Llama/Mistral/Qwen2,
peft 0.2x LoRA, bitsandbytes 0.50 Linear4bit) one op at a time; `labkit.theory.op_tape.Tape` does the autograd
bookkeeping. `labkit.theory.ops` walks the whole model with them.

Where the counts come from, for one middle layer of the course default (fp32 on a CPU, adapters on q, k, v, o
with dropout, 4-bit base, no padding): 70 ops that do work in forward,
    2 RMSNorms          6 each: pow, mean, add (eps), rsqrt, mul, mul (weight)       12   (16-bit: +2 casts each)
    7 base projections  1 gemm_4bit each (the packed weight's views are metadata)     7
    4 LoRA branches     9 each: clone (peft), dropout (empty_like, bernoulli_, div_,  36   (16-bit on a CPU: +4
                        mul), mm (A), mm (B), mul (scale), add (onto the base)             casts each)
    RoPE on q and k     5 each: mul, neg, cat, mul, add (the halves are slices)       10
    attention           1 fused SDPA op                                                1
    SwiGLU              silu, mul                                                      2
    2 residual adds                                                                    2
and 105 in backward:
    7 projections       re-dequantise (dequantize_blockwise, add_ offset, dequantize_4bit) and mm      28
    4 LoRA branches     mm × 2 for B (input, weight), × 2 for A, mul (scale), mul (dropout mask)      24
    2 RMSNorms          mul (weight); mul × 2 + sum (x · 1/rms); 3 for rsqrt, 1 for mean, 3 for pow     22
    RoPE                mul, neg, 2 slice_backward, mul for each of q, k; clone for each one's view     12
    attention, SwiGLU   SDPA backward; silu_backward, mul × 2                                             4
    gradient sums       one add for each extra consumer of a tensor (the norm outputs feed 3 base
                        projections and 3 adapters; residuals; q and k feed RoPE three times)             15
With checkpointing the forward is re-run in backward up to its last saved tensor: 67 of the 70 here (down_proj
and the last residual add save nothing; SwiGLU's product is not re-run because its inputs are the last saved).
"""
from __future__ import annotations

from dataclasses import dataclass

from labkit.config import RunConfig
from labkit.shapes import ModelShape
from labkit.theory.op_tape import Sym, Tape


@dataclass
class Setup:
    """What the recipes branch on."""
    shape: ModelShape
    cfg: RunConfig
    low: bool            # 16-bit autocast
    cuda: bool
    padding: bool
    nf4: bool
    input_grad: bool

    def lora(self, proj: str) -> bool:
        return proj in self.cfg.lora_targets


MUL, ADD, VIEW, T = "aten.mul.Tensor", "aten.add.Tensor", "aten.view", "aten.t"
TO = "aten._to_copy"


def mul(tp: Tape, a: Sym, b: Sym, sum_b: bool = False) -> Sym:
    """a * b: keeps b for a's gradient and a for b's; each gradient is one mul (b broadcast: summed back)."""
    saved = ([b] if a.grad else []) + ([a] if b.grad else [])
    back = ([MUL] if a.grad else []) + ([MUL] + (["aten.sum.dim_IntList"] if sum_b else []) if b.grad else [])
    return tp.op(MUL, [a, b], saved=saved, backward=back)


def cast(tp: Tape, x: Sym) -> Sym:
    return tp.op(TO, [x], backward=[TO])                          # ToCopyBackward: the gradient cast back


def view(tp: Tape, name: str, x: Sym, back: str | list) -> Sym:
    return tp.op(name, [x], backward=[back] if isinstance(back, str) else back)


def rms_norm(tp: Tape, s: Setup, x: Sym) -> Sym:
    """LlamaRMSNorm (Mistral, Qwen2 alike): x.to(fp32); x * rsqrt(mean(x²) + eps); weight * x.to(input dtype)."""
    x32 = cast(tp, x) if s.low else x                            # 16-bit: upcast (fp32 already: no op)
    sq = tp.op("aten.pow.Tensor_Scalar", [x32], saved=[x32],      # x², keeps x: backward 2·x·grad
               backward=["aten.pow.Tensor_Scalar", "aten.mul.Scalar", MUL])
    var = tp.op("aten.mean.dim", [sq], backward=["aten.expand", "aten.div.Scalar"])
    var = tp.op(ADD, [var])                                       # + eps
    inv = tp.op("aten.rsqrt", [var], saved_out=True,              # keeps its result: -½·r³·grad
                backward=["aten.pow.Tensor_Scalar", "aten.mul.Scalar", MUL])
    h = mul(tp, x32, inv, sum_b=True)                            # 1/rms is (T, 1): its gradient is summed
    if s.low:
        h = cast(tp, h)
    return mul(tp, tp.tensor(), h)                               # the frozen weight


def linear(tp: Tape, x: Sym, w: Sym, cast_x: bool = False, cast_w: bool = False) -> Sym:
    """F.linear(x, w) on a 3-D x, no bias: w.t(), x.view(T, d), mm, _unsafe_view back (autocast casts first).
    mm's backward: the input gradient is t + mm, the weight's t + t + mm."""
    if cast_x:
        x = cast(tp, x)
    if cast_w:
        w = cast(tp, w)
    wt = view(tp, T, w, T)
    x2 = view(tp, VIEW, x, VIEW)
    back = ([T, "aten.mm"] if x2.grad else []) + ([T, T, "aten.mm"] if wt.grad else [])
    y = tp.op("aten.mm", [x2, wt], saved=([wt] if x2.grad else []) + ([x2] if wt.grad else []), backward=back)
    return view(tp, "aten._unsafe_view", y, VIEW)


def _base_linear(tp: Tape, s: Setup, x: Sym, bias: bool) -> Sym:
    """The frozen base projection. 4-bit (bitsandbytes Linear4bit → matmul_4bit): the packed weight is viewed
    as (-1, 1), and once more inside MatMul4Bit when x needs a gradient; one gemm_4bit op (bias inside). Its
    backward re-dequantises the weight (double quant: absmax from dequantize_blockwise, += offset) and multiplies.
    Unquantised (nn.Linear): w.t(), then mm (addmm with a bias) between views."""
    if s.nf4:
        tp.plain(VIEW)
        if x.grad:
            tp.plain(VIEW)
        return tp.op("bitsandbytes.gemm_4bit", [x], backward=[
            "bitsandbytes.dequantize_blockwise", "aten.add_.Tensor", "bitsandbytes.dequantize_4bit",
            VIEW, "aten.mm", "aten._unsafe_view"])
    tp.plain(T)
    x2 = view(tp, VIEW, x, VIEW)
    y = tp.op("aten.addmm" if bias else "aten.mm", [x2], saved=[tp.tensor()], backward=[T, "aten.mm"])
    return view(tp, VIEW if bias else "aten._unsafe_view", y, VIEW)


def _projection(tp: Tape, s: Setup, x: Sym, proj: str, bias: bool = False) -> Sym:
    """A base projection, with peft's LoRA branch when `proj` is a target:
    result = base(x) [.clone() for 4-bit]; result + lora_B(lora_A(dropout(x))) · scale."""
    out = _base_linear(tp, s, x, bias)
    if not s.lora(proj):
        return out
    if s.nf4:
        out = tp.op("aten.clone", [out])                         # peft: "defensively clone" a 4-bit result
    xa = x
    if s.low and (not s.cuda or not s.nf4):                       # adapter input cast to the adapters' fp32:
        xa = cast(tp, x)                                         # peft does it unless CUDA autocast is on
    if s.cfg.lora_dropout > 0:
        if s.cuda:
            xa = tp.op("aten.native_dropout", [xa], saved_aux=1,  # one fused op; keeps its mask
                       backward=["aten.native_dropout_backward"])
        else:                                                     # x · (bernoulli(1-p) / (1-p))
            tp.plain("aten.empty_like", "aten.bernoulli_.float", "aten.div_.Scalar")
            xa = mul(tp, xa, tp.tensor())
    a = linear(tp, xa, tp.param(), cast_x=s.low and not (s.cuda and s.nf4), cast_w=s.low)
    b = linear(tp, a, tp.param(), cast_w=s.low)
    scaled = tp.op(MUL, [b], backward=[MUL])                      # · alpha / r: a Python float, nothing packed
    return tp.op(ADD, [out, scaled])


def _rotate(tp: Tape, x: Sym, cos: Sym, sin: Sym) -> Sym:
    """x·cos + rotate_half(x)·sin; rotate_half = cat(-x[..., d/2:], x[..., :d/2])."""
    xc = mul(tp, x, cos)
    hi = view(tp, "aten.slice.Tensor", x, "aten.slice_backward")
    lo = view(tp, "aten.slice.Tensor", x, "aten.slice_backward")
    neg = tp.op("aten.neg", [hi], backward=["aten.neg"])
    rot = tp.op("aten.cat", [neg, lo], backward=["aten.slice.Tensor"] * 2)
    return tp.op(ADD, [xc, mul(tp, rot, sin)])


def _attention(tp: Tape, s: Setup, h: Sym) -> Sym:
    """LlamaAttention with transformers' sdpa_attention_forward: q, k, v projections viewed as heads, RoPE on q
    and k, one fused attention op (k and v repeated to every head first when a padding mask rules out SDPA's
    own GQA), the output reshaped back and projected by o_proj."""
    sh = s.shape
    bias = sh.qkv_bias
    q = view(tp, VIEW, _projection(tp, s, h, "q_proj", bias), ["aten.clone", "aten._unsafe_view"])
    q = view(tp, "aten.transpose.int", q, "aten.transpose.int")
    k = view(tp, VIEW, _projection(tp, s, h, "k_proj", bias), ["aten.clone", "aten._unsafe_view"])
    k = view(tp, "aten.transpose.int", k, "aten.transpose.int")
    gqa_repeat = s.padding and sh.kv_heads < sh.heads             # a mask: transformers repeats k, v itself
    v = view(tp, VIEW, _projection(tp, s, h, "v_proj", bias),    # v's gradient comes back transposed
              ["aten.clone", "aten._unsafe_view"] if gqa_repeat else VIEW)   # (contiguous unless repeated)
    v = view(tp, "aten.transpose.int", v, "aten.transpose.int")
    tp.plain("aten.unsqueeze", "aten.unsqueeze")                  # cos, sin [:, None]
    cos, sin = tp.tensor(), tp.tensor()
    q, k = _rotate(tp, q, cos, sin), _rotate(tp, k, cos, sin)
    if gqa_repeat:
        k, v = _repeat_kv(tp, k), _repeat_kv(tp, v)
    if s.padding:                                                 # SDPA turns the bool mask into a float one
        tp.plain("aten.scalar_tensor", "aten.scalar_tensor", "aten.where.self")
    name = _sdpa_name(s)
    mask = [tp.tensor()] if s.padding else []
    out = tp.op(name, [q, k, v], saved=[q, k, v] + mask, saved_out=True, saved_aux=1,   # and logsumexp
                backward=[name + "_backward"])
    out = view(tp, VIEW, out, VIEW)                              # reshape(b, -1, s, d)
    out = view(tp, "aten.transpose.int", out, "aten.transpose.int")   # .transpose(1, 2) (contiguous already)
    out = view(tp, VIEW, out, VIEW)                              # reshape(b, s, h)
    return _projection(tp, s, out, "o_proj")


def _repeat_kv(tp: Tape, x: Sym) -> Sym:
    """transformers' repeat_kv: x[:, :, None].expand(…).reshape(…), the reshape of an expanded view a copy."""
    x = view(tp, "aten.unsqueeze", x, "aten.squeeze.dim")
    x = tp.op("aten.expand", [x], backward=["aten.sum.dim_IntList"])      # its gradient: summed over the copies
    return view(tp, "aten._unsafe_view", tp.op("aten.clone", [x]), VIEW)


def _sdpa_name(s: Setup) -> str:
    if not s.cuda:
        return "aten._scaled_dot_product_flash_attention_for_cpu"
    if s.padding:
        return "aten._scaled_dot_product_efficient_attention"
    return "aten._scaled_dot_product_flash_attention"


def _mlp(tp: Tape, s: Setup, h: Sym) -> Sym:
    """SwiGLU: down(silu(gate(h)) · up(h))."""
    g = _projection(tp, s, h, "gate_proj")
    a = tp.op("aten.silu", [g], saved=[g], backward=["aten.silu_backward"])
    u = _projection(tp, s, h, "up_proj")
    return _projection(tp, s, mul(tp, a, u), "down_proj")


def decoder_layer(tp: Tape, s: Setup, x: Sym) -> Sym:
    """x + attn(norm(x)), then + mlp(norm(·)): two RMSNorms, two residual adds."""
    x = tp.op(ADD, [x, _attention(tp, s, rms_norm(tp, s, x))])
    return tp.op(ADD, [x, _mlp(tp, s, rms_norm(tp, s, x))])
