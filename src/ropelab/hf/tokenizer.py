"""A byte-level tokenizer in transformers' form: the vocabulary of ropelab's lab text models.

The lab's language models read raw bytes (ids 0-255) after a beginning-of-sequence
token (id 256). :func:`byte_tokenizer` is that vocabulary as a transformers fast
tokenizer, so a checkpoint written with it is opened by ``AutoTokenizer`` like any other.
It is a byte-level BPE without merges (the byte-to-character table of GPT-2's byte-level
BPE, Radford et al. 2019), which maps every byte to its own id.
"""

from __future__ import annotations

from .._optional import require

__all__ = ["BYTE_BOS_TOKEN", "BYTE_VOCAB_SIZE", "byte_tokenizer"]

#: the beginning-of-sequence token (id 256); unlikely to appear in text, where a special
#: token's string would be read as the token itself
BYTE_BOS_TOKEN = "<|ropelab_bos|>"
#: 256 bytes and the beginning-of-sequence token
BYTE_VOCAB_SIZE = 257


def _byte_chars() -> dict[int, str]:
    """GPT-2's printable stand-in character for every byte (what ByteLevel pre-tokenizes to)."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("\xa1"), ord("\xac") + 1))
        + list(range(ord("\xae"), ord("\xff") + 1))
    )
    chars = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in chars:
            chars[b] = chr(256 + extra)
            extra += 1
    return chars


def byte_tokenizer():
    """A transformers fast tokenizer whose ids are the text's UTF-8 bytes (0-255), with
    :data:`BYTE_BOS_TOKEN` as id 256 (not added by encoding: callers put it first).

    Requires transformers (``pip install 'ropelab[hf]'``) and its ``tokenizers``.
    """
    transformers = require("transformers", feature="ropelab.hf.byte_tokenizer")
    tokenizers = require("tokenizers", feature="ropelab.hf.byte_tokenizer")
    vocab = {char: b for b, char in _byte_chars().items()}
    tok = tokenizers.Tokenizer(tokenizers.models.BPE(vocab=vocab, merges=[]))
    # no regex split and no prefix space: the bytes are taken exactly as they come
    tok.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = tokenizers.decoders.ByteLevel()
    tok.add_special_tokens([tokenizers.AddedToken(BYTE_BOS_TOKEN, special=True)])
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BYTE_BOS_TOKEN)
