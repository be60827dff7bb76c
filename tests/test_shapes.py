"""Model shapes: a config.json is checked field by field before the theory or the loader reads it, and advice about
a run on a shape (a sequence beyond its positions, a rank above a layer's) is a warning, never a refusal."""
import os
import json
import warnings

import pytest

from labkit import RunConfig, estimate
from labkit.config import LabkitWarning
from labkit.shapes import PRESETS, ModelShape, check_model_config, fit_warnings, resolve_shape

TINY = {"model_type": "llama", "hidden_size": 256, "intermediate_size": 688, "num_hidden_layers": 2,
        "num_attention_heads": 8, "num_key_value_heads": 4, "vocab_size": 384, "max_position_embeddings": 2048,
        "hidden_act": "silu", "tie_word_embeddings": False}


def write(tmp_path, **change):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**TINY, **change}))
    return str(path)


def test_a_good_config_gives_its_shape(tmp_path):
    shape = resolve_shape(write(tmp_path))
    assert (shape.hidden, shape.heads, shape.kv_heads, shape.hd, shape.layers) == (256, 8, 4, 32, 2)
    assert resolve_shape(write(tmp_path, max_position_embeddings=None, rms_norm_eps=None)).max_position == 4096


@pytest.mark.parametrize("change, words", [
    ({"num_attention_heads": 0}, "num_attention_heads must be a positive integer, got 0"),
    ({"hidden_size": None}, "hidden_size must be a positive integer, got null"),
    ({"num_hidden_layers": -4}, "num_hidden_layers must be a positive integer, got -4"),
    ({"hidden_size": 256.0}, "hidden_size must be a positive integer, got 256.0"),
    ({"vocab_size": "384"}, 'vocab_size must be a positive integer, got "384"'),
    ({"intermediate_size": True}, "intermediate_size must be a positive integer, got true"),
    ({"num_key_value_heads": 0}, "num_key_value_heads must be a positive integer, got 0"),
    ({"head_dim": -32}, "head_dim must be a positive integer, got -32"),
    ({"max_position_embeddings": 0}, "max_position_embeddings must be a positive integer, got 0"),
    ({"hidden_size": 250}, "hidden_size 250 is not divisible by num_attention_heads 8"),
    ({"num_key_value_heads": 3}, "num_key_value_heads 3 does not divide num_attention_heads 8"),
    ({"hidden_act": "banana"}, 'hidden_act "banana" is not an activation this kit knows'),
    ({"rms_norm_eps": 0}, "rms_norm_eps must be a finite number > 0, got 0"),
    ({"rope_theta": -1.0}, "rope_theta must be a finite number > 0, got -1.0"),
    ({"rope_parameters": {"rope_theta": 0}}, "rope_theta must be a finite number > 0, got 0"),
    ({"rope_parameters": [1]}, "rope_parameters must be an object"),
    ({"tie_word_embeddings": "yes"}, 'tie_word_embeddings must be true or false, got "yes"'),
    ({"model_type": "gpt2"}, "model_type 'gpt2' is not a Llama-family decoder"),
])
def test_a_malformed_config_names_its_field(tmp_path, change, words):
    path = write(tmp_path, **change)
    with pytest.raises(ValueError) as e:
        resolve_shape(path)
    assert words in str(e.value) and str(e.value).startswith(path) and "\n" not in str(e.value)
    with pytest.raises(ValueError, match=words.split(" ")[0]):          # the theory reads it through the same check
        estimate(RunConfig(model=path))


def test_a_head_dim_lifts_the_divisibility_rule(tmp_path):
    """Llama allows heads × head_dim ≠ hidden when head_dim is given (e.g. 250 = hidden, 8 heads of 32)."""
    assert resolve_shape(write(tmp_path, hidden_size=250, head_dim=32)).hd == 32


def test_missing_fields_and_non_objects(tmp_path):
    with pytest.raises(ValueError, match="lacks hidden_size"):
        check_model_config({k: v for k, v in TINY.items() if k != "hidden_size"})
    path = tmp_path / "config.json"
    path.write_text("[1, 2]")
    with pytest.raises(ValueError, match="is not a JSON object"):
        resolve_shape(str(path))


@pytest.mark.parametrize("name", list(PRESETS))
def test_presets_pass_and_round_trip_through_a_transformers_config(name):
    shape = PRESETS[name].shape
    assert ModelShape.from_hf_config(shape.to_hf_config()) == shape


def test_a_transformers_config_object_is_checked_too():
    hf = PRESETS["tiny"].shape.to_hf_config()
    hf.num_key_value_heads = 3
    with pytest.raises(ValueError, match="num_key_value_heads 3 does not divide num_attention_heads 8"):
        ModelShape.from_hf_config(hf)


def test_the_model_loader_reads_shapes_through_the_check(tmp_path):
    from labkit.engine.models import model_source
    with pytest.raises(ValueError, match="num_attention_heads must be a positive integer"):
        model_source(RunConfig(model=write(tmp_path, num_attention_heads=0)), weights="random")


# ---- advice: warnings, not refusals ----------------------------------------------------------------------------------
def test_fit_warnings_for_positions_and_rank():
    tiny = PRESETS["tiny"].shape                                    # 2048 positions, hidden 256, k_proj 256 → 128
    assert fit_warnings(tiny, 2048, 128, ("q_proj", "k_proj")) == []
    said = fit_warnings(tiny, 4096, 16)
    assert len(said) == 1 and said[0].startswith("seq_len 4096 is beyond the model's 2048 positions")
    said = fit_warnings(tiny, 256, 512, ("q_proj",))
    assert len(said) == 1 and "lora_r 512 is above the rank q_proj can have (min(256, 256) = 256" in said[0]
    assert "k_proj" in fit_warnings(tiny, 256, 200, ("q_proj", "k_proj"))[0]   # k_proj's 128 binds first


@pytest.mark.parametrize("change, words", [({"seq_len": 4096}, "beyond the model's 2048 positions"),
                                           ({"lora_r": 512}, "lora_r 512 is above the rank")])
def test_estimate_warns_and_keeps_the_advice_in_its_record(change, words):
    with pytest.warns(LabkitWarning, match=words):
        record = estimate(RunConfig(**change), device="cpu")
    assert record["status"] == "ok"
    assert any(words in w for w in record["warnings"])


def test_no_advice_for_the_defaults():
    with warnings.catch_warnings():
        warnings.simplefilter("error", LabkitWarning)
        record = estimate(RunConfig(), device="cpu")
    assert record["warnings"] == []


@pytest.mark.parametrize("change, said", [
    ({"vocab_size": 10 ** 400}, "vocab_size 1000000000000000000000000000000000000000… .401 characters. is beyond"),
    ({"num_hidden_layers": 10 ** 6}, "num_hidden_layers 1000000 is beyond any model"),
    ({"hidden_size": 2 ** 40, "num_attention_heads": 32}, "hidden_size .* is beyond"),
    ({"rms_norm_eps": 10 ** 400}, "rms_norm_eps must be a finite number")])
def test_a_config_json_with_counts_past_any_model_is_refused_at_once(tmp_path, change, said):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**PRESETS["tiny"].shape.to_hf_config().to_dict(), **change}))
    with pytest.raises(ValueError, match=said):
        resolve_shape(str(path))


@pytest.mark.parametrize("text, said", [("[" * 100_000, "nested deeper"), ("{}" + " " * (1 << 20), "over 1024 KiB"),
                                        ("\udcff", "cannot read model config")])
def test_a_config_json_that_is_no_config_gets_one_line(tmp_path, text, said):
    path = tmp_path / "config.json"
    path.write_bytes(text.encode("utf-8", "surrogateescape"))
    with pytest.raises(ValueError, match=said):
        resolve_shape(str(path))


def test_a_named_pipe_is_never_read_or_written_as_if_it_were_a_file(tmp_path):
    from labkit.record import read_jsonl
    from labkit.sweeps import check_output_path, check_plot_path
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    for refuse in (lambda: read_jsonl(fifo), lambda: check_output_path(fifo), lambda: check_plot_path(fifo)):
        with pytest.raises(ValueError, match="not a regular file"):
            refuse()
    with pytest.raises(ValueError, match="unknown model"):
        resolve_shape(str(fifo))
