"""Text data for the lab: a byte-level tokenizer that needs no hub, the course's own small dataset, and batches.

- `byte_tokenizer()` maps every UTF-8 byte to its own id (0..255) and adds three special tokens: `<pad>` = 256,
  `<s>` = 257, `</s>` = 258. 259 ids fit the tiny preset's vocabulary of 384. Decoding the ids of any string gives
  the string back exactly; a literal "<s>" in the text stays four bytes, it is never read as a special token.
- `course_texts()` reads `labkit/engine/course_notes.jsonl`: a few hundred short notes on training memory written
  for this course (see `tools/make_course_notes.py`).
- `batches(...)` yields `{"input_ids", "attention_mask", "labels"}` forever, in a seeded order. By default every
  batch has the same shape (micro_batch, seq_len): Axolotl's rule 3, padding to a constant length so the CUDA
  caching allocator can reuse its blocks from step to step.
- `hub_tokenizer(hub_id)` loads a real model's tokenizer from the Hugging Face hub (for Colab); offline it fails
  with one clear message.
"""
from __future__ import annotations

import functools
import json
import random
from importlib import resources
from typing import Iterator, Sequence

IGNORE_INDEX = -100          # labels at padding: cross-entropy skips them
PAD, BOS, EOS = "<pad>", "<s>", "</s>"
MIN_SEQ_LEN = 8


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's table: one printable character per byte, the alphabet that the ByteLevel pre-tokenizer speaks."""
    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
                 + list(range(ord("®"), ord("ÿ") + 1)))
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return {b: chr(c) for b, c in zip(printable, chars)}


@functools.lru_cache(maxsize=1)
def byte_tokenizer():
    """A byte-level `PreTrainedTokenizerFast` built in code: ids 0..255 are the bytes, then <pad>, <s>, </s>.

    The object is cached and shared: do not change its settings; build your own copy if you need to.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    table = _bytes_to_unicode()
    vocab = {table[b]: b for b in range(256)}
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))          # no merges: one token per byte
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    core.add_special_tokens([PAD, BOS, EOS])                       # → 256, 257, 258, in this order
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token=PAD, bos_token=BOS, eos_token=EOS,
        split_special_tokens=True,          # "<s>" typed in a text is bytes, not the special token
        clean_up_tokenization_spaces=False,  # keep " ." as it is: exact round trip
        model_max_length=1 << 30, padding_side="right",
    )
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id, len(tok)) == (256, 257, 258, 259)
    return tok


@functools.lru_cache(maxsize=1)
def _course_texts() -> tuple[str, ...]:
    path = resources.files("labkit.engine").joinpath("course_notes.jsonl")
    texts = []
    with path.open("r", encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                texts.append(json.loads(line)["text"])
    return tuple(texts)


def course_texts() -> list[str]:
    """The course's own training texts (a new list each call; the file is read once)."""
    return list(_course_texts())


def hub_tokenizer(hub_id: str):
    """The tokenizer of a hub model (never runs remote code); pad token = eos when the model has none."""
    if not isinstance(hub_id, str) or not hub_id.strip():
        raise ValueError(f"hub_id must be a model name such as 'Qwen/Qwen2.5-0.5B-Instruct', got {hub_id!r}")
    from transformers import AutoTokenizer
    try:
        tok = AutoTokenizer.from_pretrained(hub_id, trust_remote_code=False)
    except Exception as exc:  # offline, unknown name, gated model: one message that says what to do
        raise OSError(f"could not load the tokenizer of {hub_id!r} from the Hugging Face hub ({type(exc).__name__}); "
                      "check the name and the network, or use byte_tokenizer() offline") from exc
    if tok.pad_token is None:
        if tok.eos_token is None:
            raise ValueError(f"the tokenizer of {hub_id!r} has neither a pad nor an eos token to pad with")
        tok.pad_token = tok.eos_token
    return tok


def _check(name: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer of at least {minimum}, got {value!r}")


def encode_texts(tokenizer, texts: Sequence[str], seq_len: int) -> list[list[int]]:
    """bos + the text's tokens + eos for each text, cut to seq_len (bos/eos skipped where the tokenizer has none)."""
    ids = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    head = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    tail = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    return [(head + list(row) + tail)[:seq_len] for row in ids]


def batches(tokenizer, texts: Sequence[str], seq_len: int, micro_batch: int, pad_to_seq_len: bool = True,
            seed: int = 0) -> Iterator[dict]:
    """An endless, seeded stream of training batches.

    Each text becomes bos + tokens + eos, cut to `seq_len`. Batches are filled in a shuffled order that is
    reshuffled every pass over the texts (same seed → same stream). With `pad_to_seq_len` every batch is padded to
    (micro_batch, seq_len); without it, to the longest row in the batch. labels = input_ids with -100 at padding.
    """
    _check("seq_len", seq_len, MIN_SEQ_LEN)
    _check("micro_batch", micro_batch, 1)
    if isinstance(texts, str):
        raise ValueError("texts must be a list of strings, not a single string")
    texts = list(texts)
    if not texts:
        raise ValueError("texts is empty: batches need at least one text")
    if not all(isinstance(t, str) for t in texts):
        raise ValueError("texts must contain only strings")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad_id is None:
        raise ValueError("the tokenizer has no pad token and no eos token to pad with")
    rows = encode_texts(tokenizer, texts, seq_len)
    return _stream(rows, seq_len, micro_batch, pad_to_seq_len, seed, pad_id)


def _stream(rows, seq_len, micro_batch, pad_to_seq_len, seed, pad_id):
    import torch

    rng = random.Random(seed)
    order: list[int] = []
    while True:
        while len(order) < micro_batch:          # a batch may run over the end of a pass into the next one
            epoch = list(range(len(rows)))
            rng.shuffle(epoch)
            order.extend(epoch)
        picked, order = order[:micro_batch], order[micro_batch:]
        chosen = [rows[i] for i in picked]
        width = seq_len if pad_to_seq_len else max(1, max(len(r) for r in chosen))
        input_ids = torch.full((micro_batch, width), pad_id, dtype=torch.long)
        attention_mask = torch.zeros((micro_batch, width), dtype=torch.long)
        for b, row in enumerate(chosen):
            input_ids[b, :len(row)] = torch.tensor(row, dtype=torch.long)
            attention_mask[b, :len(row)] = 1
        labels = input_ids.masked_fill(attention_mask == 0, IGNORE_INDEX)
        yield {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
