"""ropelab.hf.compat: the calls whose form moved between transformers releases, checked
against stand-ins with the older and the newer signatures (only one release is installed)."""

import pytest

from ropelab.hf import compat


def test_causal_mask_passes_the_cache_under_the_keyword_the_helper_takes():
    def newer(config, inputs_embeds, attention_mask, position_ids, cache=None):
        return ("cache", cache)

    def older(config, inputs_embeds, attention_mask, position_ids, past_key_values=None):
        return ("past_key_values", past_key_values)

    for make, key in ((newer, "cache"), (older, "past_key_values")):
        got = compat.causal_mask(
            make, config=None, inputs_embeds=None, attention_mask=None, position_ids=None, cache="c"
        )
        assert got == (key, "c")


def test_rope_parameters_reads_either_attribute():
    class New:
        rope_parameters = {"rope_type": "yarn", "factor": 4.0}

    class Old:
        rope_scaling = {"type": "linear", "factor": 2.0}

    class Plain:
        pass

    assert compat.rope_parameters(New())["rope_type"] == "yarn"
    assert compat.rope_parameters(Old())["factor"] == 2.0
    assert compat.rope_parameters(Plain()) == {}


class _Config:
    pass


class ToyRotaryEmbedding:
    def __init__(self, config):
        self.config = config

    def __call__(self, x, position_ids):
        return ("emb", position_ids)


class ToyAttention:
    """The newer form: the model hands it position_embeddings."""

    config = _Config()

    def forward(self, hidden_states, position_embeddings, attention_mask=None, **kwargs):
        return (hidden_states, position_embeddings, attention_mask), None

    __call__ = forward


class OldToyAttention:
    """The older form: it reads its own table by position_ids."""

    config = _Config()

    def forward(self, hidden_states, attention_mask=None, position_ids=None):
        return (hidden_states, position_ids, attention_mask), None

    __call__ = forward


class NoTableAttention(ToyAttention):
    pass


def test_attention_forward_builds_position_embeddings_with_the_family_class():
    out = compat.attention_forward(ToyAttention(), "x", attention_mask="m", position_ids="p")
    assert out == ("x", ("emb", "p"), "m")
    given = compat.attention_forward(
        ToyAttention(), "x", attention_mask="m", position_ids="p", position_embeddings="e"
    )
    assert given == ("x", "e", "m")


def test_attention_forward_passes_position_ids_to_the_older_form():
    assert compat.attention_forward(OldToyAttention(), "x", attention_mask="m", position_ids="p") == (
        "x",
        "p",
        "m",
    )


def test_attention_forward_names_a_missing_rotary_class():
    with pytest.raises(TypeError, match="NoTableRotaryEmbedding"):
        compat.attention_forward(NoTableAttention(), "x", attention_mask=None, position_ids="p")


def test_transformers_version_is_a_tuple():
    pytest.importorskip("transformers")
    version = compat.transformers_version()
    assert len(version) == 3 and version >= (4, 45, 0)
