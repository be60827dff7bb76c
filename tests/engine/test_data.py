"""The byte tokenizer, the shipped course notes and the batch stream."""
import itertools
import json
from importlib import resources

import pytest
import torch

from labkit.engine.data import IGNORE_INDEX, batches, byte_tokenizer, course_texts, hub_tokenizer

SAMPLES = ["", "a", "hello world", "  two  spaces\n\ttab\r\n", "a . b , c ' s n't ?", "héllo wörld — ñ",
           "日本語のテキスト", "emoji 🤖🚀 and zwj 👩‍💻", "<s> looks special </s> <pad>", "\x00\x01\x7f\xff",
           "x" * 1000]


def test_tokenizer_ids_and_size():
    tok = byte_tokenizer()
    assert len(tok) == 259
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id) == (256, 257, 258)
    assert (tok.pad_token, tok.bos_token, tok.eos_token) == ("<pad>", "<s>", "</s>")
    assert byte_tokenizer() is tok  # cached


@pytest.mark.parametrize("text", SAMPLES)
def test_round_trip_is_exact_and_ids_are_bytes(text):
    tok = byte_tokenizer()
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert ids == list(text.encode("utf-8"))
    assert tok.decode(ids) == text


def test_round_trip_of_all_course_notes():
    tok = byte_tokenizer()
    texts = course_texts()
    rows = tok(texts, add_special_tokens=False)["input_ids"]
    assert tok.batch_decode(rows) == texts


def test_special_ids_decode_and_skip():
    tok = byte_tokenizer()
    ids = [257] + list(b"hi") + [258, 256]
    assert tok.decode(ids) == "<s>hi</s><pad>"
    assert tok.decode(ids, skip_special_tokens=True) == "hi"


def test_course_notes_shape():
    texts = course_texts()
    assert len(texts) >= 300
    assert len(set(texts)) == len(texts)
    assert all(100 <= len(t) <= 600 for t in texts)
    assert course_texts() is not course_texts()  # callers get their own list
    raw = resources.files("labkit.engine").joinpath("course_notes.jsonl").read_text(encoding="utf-8")
    assert [json.loads(line)["text"] for line in raw.splitlines() if line.strip()] == texts


def test_course_notes_generator_is_reproducible(tmp_path, monkeypatch):
    import importlib.util
    import pathlib
    script = pathlib.Path(__file__).resolve().parents[2] / "tools" / "make_course_notes.py"   # a build tool,
    assert script.exists()                                                        # not shipped in the package
    spec = importlib.util.spec_from_file_location("make_course_notes", script)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.build() == course_texts()


def _take(it, n):
    return list(itertools.islice(it, n))


def test_batch_padding_and_labels():
    tok = byte_tokenizer()
    texts = ["abc", "a much longer text than the first one"]
    (b,) = _take(batches(tok, texts, seq_len=16, micro_batch=2, seed=0), 1)
    assert set(b) == {"input_ids", "attention_mask", "labels"}
    for v in b.values():
        assert v.dtype == torch.long and v.shape == (2, 16)
    rows = {tuple(r[m.bool()].tolist()) for r, m in zip(b["input_ids"], b["attention_mask"])}
    assert (257, *b"abc", 258) in rows
    assert (257, *b"a much longer text than the first one"[:15]) in rows  # truncated: no room for eos
    short = [i for i in range(2) if b["attention_mask"][i].sum() == 5][0]
    assert b["attention_mask"][short].tolist() == [1] * 5 + [0] * 11
    assert b["input_ids"][short, 5:].tolist() == [256] * 11
    assert b["labels"][short].tolist() == [257, *b"abc", 258] + [IGNORE_INDEX] * 11
    assert torch.equal(b["labels"][b["attention_mask"] == 1], b["input_ids"][b["attention_mask"] == 1])


def test_pad_to_longest_when_not_constant():
    tok = byte_tokenizer()
    texts = ["ab", "abcdef", "abcdefghij"]
    widths = {b["input_ids"].shape[1] for b in _take(batches(tok, texts, 64, 2, pad_to_seq_len=False), 12)}
    assert widths <= {8, 12} and len(widths) > 1         # longest in batch: 6+2 or 10+2
    for b in _take(batches(tok, texts, 64, 2, pad_to_seq_len=False), 6):
        longest = b["attention_mask"].sum(1).max().item()
        assert b["input_ids"].shape[1] == longest


def test_constant_shape_over_many_batches():
    tok = byte_tokenizer()
    shapes = {tuple(b["input_ids"].shape) for b in _take(batches(tok, course_texts(), 128, 3), 40)}
    assert shapes == {(3, 128)}


def test_deterministic_and_seeded():
    tok = byte_tokenizer()
    texts = course_texts()[:23]
    a = _take(batches(tok, texts, 32, 4, seed=7), 15)
    b = _take(batches(tok, texts, 32, 4, seed=7), 15)
    c = _take(batches(tok, texts, 32, 4, seed=8), 15)
    assert all(torch.equal(x["input_ids"], y["input_ids"]) for x, y in zip(a, b))
    assert not all(torch.equal(x["input_ids"], y["input_ids"]) for x, y in zip(a, c))


def test_every_text_once_per_pass_and_reshuffled():
    tok = byte_tokenizer()
    texts = [f"text number {i:02d}" for i in range(12)]
    it = batches(tok, texts, 32, 4, seed=3)
    passes = []
    for _ in range(3):
        seen = []
        for b in _take(it, 3):  # 12 texts / 4 per batch = one pass
            for row, m in zip(b["input_ids"], b["attention_mask"]):
                seen.append(bytes(row[m.bool()][1:-1].tolist()).decode())
        assert sorted(seen) == texts
        passes.append(seen)
    assert passes[0] != passes[1] or passes[1] != passes[2]


def test_micro_batch_larger_than_dataset():
    tok = byte_tokenizer()
    (b,) = _take(batches(tok, ["only one"], 16, 3), 1)
    assert b["input_ids"].shape == (3, 16)


@pytest.mark.parametrize("kwargs, words", [
    (dict(seq_len=7), "seq_len must be an integer of at least 8"),
    (dict(seq_len=0), "seq_len"),
    (dict(seq_len=16.0), "seq_len"),
    (dict(micro_batch=0), "micro_batch must be an integer of at least 1"),
    (dict(micro_batch=True), "micro_batch"),
    (dict(texts=[]), "texts is empty"),
    (dict(texts="just a string"), "list of strings"),
    (dict(texts=["ok", 3]), "only strings"),
])
def test_bad_arguments_raise_one_clear_value_error(kwargs, words):
    args = dict(tokenizer=byte_tokenizer(), texts=["hello there"], seq_len=16, micro_batch=2)
    args.update(kwargs)
    with pytest.raises(ValueError, match=words) as info:
        batches(**args)  # raises at the call, before the first next()
    assert "\n" not in str(info.value)


def test_hub_tokenizer_offline_is_a_clear_error():
    with pytest.raises(OSError, match="could not load the tokenizer of 'no-such-org/no-such-model'"):
        hub_tokenizer("no-such-org/no-such-model")
    with pytest.raises(ValueError, match="hub_id"):
        hub_tokenizer("")
