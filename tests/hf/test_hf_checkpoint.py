"""ropelab.hf.save_pretrained / load_pretrained: a ropelab Transformer written as a
transformers checkpoint opens in AutoModelForCausalLM with the same logits, reads back,
and every malformed folder is refused naming its file."""

import json
import os

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
safetensors_torch = pytest.importorskip("safetensors.torch")

from ropelab import RopeConfig  # noqa: E402
from ropelab.hf import CheckpointError, byte_tokenizer, load_pretrained, save_pretrained  # noqa: E402
from ropelab.hf.compat import rope_parameters  # noqa: E402
from ropelab.scaling import NTK, DynamicNTK, Llama3, LongRoPE, YaRN  # noqa: E402
from ropelab.torch import Transformer, TransformerConfig  # noqa: E402

TOL = 1e-5  # absolute, on logits of order 1
VOCAB = 61


def _model(layers=("rope",) * 3, *, layout="half", scaling=None, seed=0, **options):
    torch.manual_seed(seed)
    config = TransformerConfig(
        VOCAB, d_model=32, num_heads=4, num_kv_heads=2, layers=layers,
        rope=RopeConfig(8, layout=layout, scaling=scaling), **options,
    )
    model = Transformer(config).eval()
    with torch.no_grad():  # every weight random and sizeable (norms too), so a misplaced one shows
        for p in model.parameters():
            p.normal_(0.0, 0.3)
    return model


def _ids(t=40, seed=1):
    return torch.randint(0, VOCAB, (2, t), generator=torch.Generator().manual_seed(seed))


def _hf(folder):
    return transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()


def _max_diff(model, hf, ids):
    with torch.no_grad():
        ours, theirs = model(ids), hf(ids).logits
    assert float(ours.abs().max()) > 0.3  # logits of a size where an error would show
    return float((ours - theirs).abs().max())


LONGROPE = LongRoPE([1.0, 1.1, 1.2, 1.3], [1.0, 2.0, 4.0, 8.0], 16, factor=4.0)
CASES = {
    "plain": dict(),
    "interleaved": dict(layout="interleaved"),
    "untied-bias": dict(tie_embeddings=False, kind_options={"rope": {"bias": True}}),
    "yarn": dict(scaling=YaRN(4.0, 16)),
    "ntk": dict(scaling=NTK(3.0)),
    "dynamic": dict(scaling=DynamicNTK(2.0, 16)),  # grows past 16 within the 40 tokens
    "llama3": dict(scaling=Llama3(8.0, 1.0, 4.0, 16)),
    "longrope": dict(scaling=LONGROPE),  # long factors past 16 tokens
    "irope": dict(layers=("rope", "rope", "rope", "nope")),
    "irope-llama4-options": dict(
        layers=("rope", "nope", "rope", "nope"), layout="interleaved", chunk_size=8, qk_norm=True,
        temperature_tuning=(0.5, 4.0), norm_eps=1e-6, kind_options={"rope": {"qk_norm_eps": 1e-6}},
    ),
    "all-nope": dict(layers=("nope", "nope")),
}


@pytest.mark.parametrize("case", list(CASES))
def test_transformers_opens_it_with_the_same_logits(case, tmp_path):
    model = _model(**CASES[case])
    save_pretrained(model, tmp_path, max_position_embeddings=64)
    hf = _hf(tmp_path)
    family = "LlamaForCausalLM" if set(model.config.layers) == {"rope"} else "Llama4ForCausalLM"
    assert type(hf).__name__ == family
    assert _max_diff(model, hf, _ids()) <= TOL
    # the scheme is in the config transformers read, and ropelab reads the same back
    params = rope_parameters(hf.config)
    want = model.config.rope.to_hf()["rope_parameters"]["rope_type"]
    assert params.get("rope_type", "default") == want
    family_layout = "half" if family == "LlamaForCausalLM" else "interleaved"
    assert RopeConfig.from_hf(tmp_path).scaling == model.config.rope.scaling
    assert RopeConfig.from_hf(tmp_path).layout == family_layout
    back = load_pretrained(tmp_path)
    assert isinstance(back, Transformer)
    assert back.config.layers == model.config.layers
    with torch.no_grad():
        assert float((back(_ids()) - model(_ids())).abs().max()) <= TOL


def test_written_files(tmp_path):
    model = _model(scaling=YaRN(4.0, 16))
    assert save_pretrained(model, tmp_path, max_position_embeddings=64, bos_token_id=3, eos_token_id=None) == str(tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["config.json", "model.safetensors"]  # no temporary files left
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model_type"] == "llama" and config["architectures"] == ["LlamaForCausalLM"]
    assert (config["max_position_embeddings"], config["bos_token_id"], config["eos_token_id"]) == (64, 3, None)
    assert config["tie_word_embeddings"] is True and config["intermediate_size"] == model.blocks[0].mlp.gate.out_features
    names = set(safetensors_torch.load_file(tmp_path / "model.safetensors"))
    assert "lm_head.weight" not in names  # tied: the embedding alone, as transformers writes it
    assert "model.layers.2.mlp.down_proj.weight" in names


def test_dynamic_writes_its_original_length(tmp_path):
    save_pretrained(_model(scaling=DynamicNTK(2.0, 16)), tmp_path, max_position_embeddings=64)
    assert json.loads((tmp_path / "config.json").read_text())["max_position_embeddings"] == 16


def test_tokenizer_is_saved_beside(tmp_path):
    model = _model()
    save_pretrained(model, tmp_path, tokenizer=byte_tokenizer())
    tok = transformers.AutoTokenizer.from_pretrained(tmp_path)
    assert tok.bos_token_id == 256


def test_byte_tokenizer_ids_are_bytes():
    tok = byte_tokenizer()
    text = "héllo <s> wörld\n\t\x00 ~"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert ids == list(text.encode())
    assert tok.decode(ids) == text
    assert tok.bos_token_id == 256 and len(tok) == 257


def test_load_reads_transformers_own_checkpoints(tmp_path):
    config = transformers.MistralConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=40, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, sliding_window=12,
    )
    torch.manual_seed(0)
    hf = transformers.MistralForCausalLM(config).eval()
    with torch.no_grad():
        for p in hf.parameters():
            p.normal_(0.0, 0.3)
    hf.save_pretrained(tmp_path)
    ours = load_pretrained(tmp_path)
    assert _max_diff(ours, hf, _ids(30)) <= TOL


# ------------------------------------------------------------------ what is refused


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (dict(layers=("rope", "alibi")), r"layer kind 'alibi' \(layers \[1\]\) has no transformers family"),
        (dict(layers=("nope",), absolute="sinusoidal"), "absolute='sinusoidal'"),
        (dict(mlp="gelu"), "mlp='gelu'"),
        (dict(kind_options={"rope": {"window": 8}}), "sliding window"),
        (dict(causal=False), "causal=False"),
        (dict(qk_norm=True, norm_eps=1e-6, kind_options={"rope": {"qk_norm_eps": 1e-6}}), "need 'nope' layers"),
        (dict(layers=("rope", "nope"), qk_norm=True, kind_options={"rope": {"qk_norm_eps": 1e-6}}),
         "qk_norm_eps=1e-06 differs from norm_eps=1e-05"),
        (dict(layers=("rope", "nope"), temperature_tuning=(0.1, 2.5)), "floor_scale=2.5"),
    ],
)
def test_refused(options, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        save_pretrained(_model(**options), tmp_path)
    assert not os.listdir(tmp_path)


def test_refused_partial_rotary(tmp_path):
    torch.manual_seed(0)
    model = Transformer(TransformerConfig(VOCAB, d_model=32, num_heads=4, rope=RopeConfig(8, rotary_dim=4, layout="half")))
    with pytest.raises(ValueError, match="rotary_dim=4 < head_dim=8"):
        save_pretrained(model, tmp_path)


def test_refused_arguments(tmp_path):
    with pytest.raises(TypeError, match="ropelab.torch.Transformer"):
        save_pretrained(torch.nn.Linear(2, 2), tmp_path)
    with pytest.raises(ValueError, match="max_position_embeddings must be an integer >= 1 and <= 4611686018427387904, got 0"):
        save_pretrained(_model(), tmp_path, max_position_embeddings=0)
    with pytest.raises(ValueError, match=r"bos_token_id \(a token id below vocab_size\) must be an integer >= 0 and <= 60, got 61"):
        save_pretrained(_model(), tmp_path, bos_token_id=VOCAB)


@pytest.fixture
def saved(tmp_path):
    folder = tmp_path / "ckpt"
    save_pretrained(_model(), folder, max_position_embeddings=64)
    return folder


def _edit_config(folder, **changes):
    path = folder / "config.json"
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))


def _edit_weights(folder, edit):
    path = folder / "model.safetensors"
    tensors = safetensors_torch.load_file(path)
    edit(tensors)
    safetensors_torch.save_file(tensors, path, metadata={"format": "pt"})
    return str(path)


def test_load_errors_about_the_folder(tmp_path, saved):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_pretrained(tmp_path / "nowhere")
    with pytest.raises(NotADirectoryError, match="is a file"):
        load_pretrained(saved / "config.json")
    with pytest.raises(FileNotFoundError, match="holds no config.json"):
        load_pretrained(tmp_path)
    os.unlink(saved / "model.safetensors")
    with pytest.raises(FileNotFoundError, match="holds no model.safetensors"):
        load_pretrained(saved)
    (saved / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(ValueError, match="pickled weights only"):
        load_pretrained(saved)


def test_load_errors_about_config(saved):
    path = str(saved / "config.json")
    (saved / "config.json").write_text("{")
    with pytest.raises(CheckpointError, match=f"{path} is not valid JSON"):
        load_pretrained(saved)
    (saved / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(ValueError, match="model_type 'gpt2' is not one ropelab reads"):
        load_pretrained(saved)
    (saved / "config.json").write_text(json.dumps({"model_type": "llama", "vocab_size": 61, "hidden_size": 32,
                                                   "num_hidden_layers": -1, "num_attention_heads": 4}))
    with pytest.raises(CheckpointError, match=f"{path}: num_hidden_layers must be an integer >= 1, got -1"):
        load_pretrained(saved)


def test_load_error_rope_settings(saved):
    _edit_config(saved, rope_parameters={"rope_type": "superrope", "rope_theta": 1e4})
    with pytest.raises(CheckpointError, match="RoPE settings do not read.*unknown rope_type 'superrope'"):
        load_pretrained(saved)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t: t["model.norm.weight"].fill_(float("nan")), "'model.norm.weight' holds NaN or infinite values"),
        (lambda t: t.update({"model.norm.weight": torch.ones(32, dtype=torch.int64)}), "has dtype torch.int64"),
        (lambda t: t.pop("model.layers.1.self_attn.k_proj.weight"), r"weights missing for the config's model: \['model.layers.1.self_attn.k_proj.weight'\]"),
        (lambda t: t.update({"model.extra.weight": torch.ones(3)}), r"tensors the config's model does not have: \['model.extra.weight'\]"),
        (lambda t: t.update({"model.norm.weight": torch.ones(31)}), r"'model.norm.weight' has shape \[31\], the config's model \[32\]"),
    ],
)
def test_load_errors_about_weights(saved, edit, message):
    path = _edit_weights(saved, edit)
    with pytest.raises(CheckpointError, match=message) as err:
        load_pretrained(saved)
    assert str(err.value).startswith(path)


def test_load_error_damaged_file(saved):
    path = saved / "model.safetensors"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="model.safetensors is not a readable safetensors file"):
        load_pretrained(saved)


def test_load_error_a_config_ropelab_cannot_express(saved):
    _edit_config(saved, hidden_act="gelu")
    with pytest.raises(CheckpointError, match="hidden_act='gelu'") as err:
        load_pretrained(saved)
    assert str(err.value).startswith(str(saved / "config.json"))


def test_tie_flag_beside_a_separate_lm_head_loads_as_transformers_runs_it(tmp_path):
    """config.json says tie_word_embeddings but the file holds its own lm_head.weight:
    transformers keeps that head, and so does load_pretrained (same logits)."""
    model = Transformer(TransformerConfig(vocab_size=40, d_model=32, num_heads=4, layers=("rope", "rope"),
                                          rope=RopeConfig(8, layout="half"), tie_embeddings=False)).eval()
    save_pretrained(model, tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "tie_word_embeddings": True}))
    theirs = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, local_files_only=True,
                                                               dtype=torch.float32).eval()
    ours = load_pretrained(tmp_path)
    assert not ours.config.tie_embeddings
    tokens = torch.randint(0, 40, (2, 7), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(ours(tokens), theirs(tokens).logits, rtol=0, atol=1e-5)
        torch.testing.assert_close(ours(tokens), model(tokens), rtol=0, atol=1e-5)


@pytest.mark.parametrize("key, value", [("tie_word_embeddings", "false"), ("attention_dropout", "x"),
                                        ("dtype", "float99"), ("dtype", 5)])
def test_config_values_transformers_cannot_build_are_named(tmp_path, key, value):
    """Values transformers' config or model refuses in its own ways (strict field types,
    an unknown dtype) come out as a CheckpointError naming config.json, not its exception."""
    model = Transformer(TransformerConfig(vocab_size=40, d_model=32, num_heads=4, layers=("rope",),
                                          rope=RopeConfig(8, layout="half"))).eval()
    save_pretrained(model, tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, key: value}))
    with pytest.raises(CheckpointError, match=rf"{tmp_path / 'config.json'}: transformers cannot build the model"):
        load_pretrained(tmp_path)


@pytest.mark.parametrize("layers", [1, 3, 10**9])
def test_a_layer_count_the_weights_do_not_hold_is_named_before_building(tmp_path, layers):
    """num_hidden_layers edited away from the layers in the weights is refused by
    comparing names first (a billion layers would exhaust memory being built)."""
    model = Transformer(TransformerConfig(vocab_size=40, d_model=32, num_heads=4, layers=("rope", "rope"),
                                          rope=RopeConfig(8, layout="half"))).eval()
    save_pretrained(model, tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "num_hidden_layers": layers}))
    with pytest.raises(CheckpointError, match=rf"num_hidden_layers is {layers}, but .* holds the weights of 2 layers"):
        load_pretrained(tmp_path)
