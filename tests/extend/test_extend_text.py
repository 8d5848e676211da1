"""Sliding windows score every token once with the stated context; bits per token equals
a float64 reference; passkey prompts are built as described and scored right."""

import math

import pytest

torch = pytest.importorskip("torch")

from ropelab.extend.passkey import PasskeySettings, accuracy, make_prompts  # noqa: E402
from ropelab.extend.text import bits_per_token, score_start, sliding_windows, split_stream, stride  # noqa: E402
from ropelab.hf import byte_tokenizer, load_pretrained  # noqa: E402

BOS = 99


@pytest.mark.parametrize("bos", [BOS, None])
@pytest.mark.parametrize(("length", "fraction", "count"), [(16, 0.5, 100), (32, 0.25, 64), (8, 1.0, 30), (5, 0.4, 17)])
def test_every_token_scored_once_with_its_context(length, fraction, count, bos):
    stream = torch.arange(1000) % 97  # a token's value says where it is (mod 97)
    step = stride(length, fraction)
    start = score_start([length, 8], fraction, bos)
    w = sliding_windows(stream, length=length, stride_tokens=step, start=start, count=count, bos=bos)
    index = torch.arange(1000)
    seen = []
    for k in range(len(w.inputs)):
        first = start + k * step - (length - step)
        assert torch.equal(w.targets[k], stream[first : first + length])
        shifted = stream[first - 1 : first + length - 1]
        want = torch.cat([torch.tensor([bos]), stream[first : first + length - 1]]) if bos is not None else shifted
        assert torch.equal(w.inputs[k], want)
        for j in torch.nonzero(w.scored[k]).flatten().tolist():
            seen.append(int(index[first + j]))
            assert length - step <= j <= length - 1  # context before it in its window
    assert sorted(seen) == list(range(start, start + count))  # each scored exactly once
    assert w.tokens == count


def test_windows_check_their_room():
    stream = torch.arange(100)
    with pytest.raises(ValueError, match="too early"):
        sliding_windows(stream, length=16, stride_tokens=8, start=4, count=10, bos=BOS)
    with pytest.raises(ValueError, match="the split has 100"):
        sliding_windows(stream, length=16, stride_tokens=8, start=8, count=100, bos=BOS)


def test_split_is_disjoint():
    s = split_stream(torch.arange(10), 0.3)
    assert s.search.tolist() == [0, 1, 2] and s.evaluation.tolist() == list(range(3, 10))


def test_bits_per_token_matches_a_float64_reference(tiny_checkpoint):
    model = load_pretrained(tiny_checkpoint)
    stream = torch.randint(0, 256, (400,), generator=torch.Generator().manual_seed(0))
    w = sliding_windows(stream, length=24, stride_tokens=8, start=20, count=50, bos=256)
    bits, count = bits_per_token(model, w, batch_size=3)
    total = 0.0
    with torch.no_grad():
        for k in range(len(w.inputs)):
            logp = torch.log_softmax(model(w.inputs[k : k + 1])[0].double(), dim=-1)  # (L, V)
            for j in torch.nonzero(w.scored[k]).flatten().tolist():
                total -= float(logp[j, w.targets[k, j]])
    assert count == 50
    assert bits == pytest.approx(total / 50 / math.log(2), rel=1e-6)


# ---------------------------------------------------------------------- passkey

SETTINGS = PasskeySettings(depths=(0.0, 0.5, 1.0), trials=3, digits=4, needle="key {key}. ", question="key", answer=" {key}")


def test_prompts_are_built_as_described():
    tok = byte_tokenizer()
    filler = torch.tensor(list(b"abcdefghij" * 50))
    p = make_prompts(tok, filler, 48, SETTINGS, seed=1, bos=256)
    assert p.inputs.shape == (9, 48) and p.answer.shape == (9, 5)  # " " and four digits
    for row, answer, depth in zip(p.inputs, p.answer, p.depth, strict=True):
        text = bytes(row[1:].tolist()).decode()
        key = bytes(answer.tolist()).decode().strip()
        assert row[0] == 256 and len(key) == 4 and key.isdigit()
        assert f"key {key}. " in text and text.endswith("key" + f" {key}"[:-1])  # the last digit is a target only
        needle_at = text.index(f"key {key}. ")
        filler_len = 48 + 1 - (1 + len(f"key {key}. ") + 3 + 5)
        assert needle_at == round(SETTINGS.depths[int(depth)] * filler_len)
    again = make_prompts(tok, filler, 48, SETTINGS, seed=1, bos=256)
    assert torch.equal(again.inputs, p.inputs)  # the same prompts for every scheme
    other = make_prompts(tok, filler, 48, SETTINGS, seed=2, bos=256)
    assert not torch.equal(other.inputs, p.inputs)
    assert make_prompts(tok, filler, 16, SETTINGS, seed=1, bos=256) is None  # does not fit


class _Oracle(torch.nn.Module):
    """Predicts the prompt's own next token everywhere (the answer read from a table)."""

    def __init__(self, prompts, wrong_rows=()):
        super().__init__()
        self.answers = {tuple(r.tolist()): a for r, a in zip(prompts.inputs, prompts.answer, strict=True)}
        self.wrong = {tuple(prompts.inputs[i].tolist()) for i in wrong_rows}

    def forward(self, inputs):
        logits = torch.zeros(*inputs.shape, 300)
        for b, row in enumerate(inputs):
            answer = self.answers[tuple(row.tolist())]
            width = len(answer)
            logits[b, :-1].scatter_(1, row[1:, None], 1.0)
            logits[b, -width:] = 0
            logits[b, torch.arange(inputs.shape[1] - width, inputs.shape[1]), answer] = 1.0
            if tuple(row.tolist()) in self.wrong:
                logits[b, -1, answer[-1]] = 0.0
                logits[b, -1, (answer[-1] + 1) % 300] = 1.0
        return logits


def test_accuracy_counts_right_keys_per_depth():
    tok = byte_tokenizer()
    filler = torch.tensor(list(b"abcdefghij" * 50))
    p = make_prompts(tok, filler, 40, SETTINGS, seed=0, bos=256)
    assert accuracy(_Oracle(p), p, 3, batch_size=4) == [1.0, 1.0, 1.0]
    # the last digit wrong in two prompts of depth 0.5 (rows 3..5) and one of depth 1.0
    got = accuracy(_Oracle(p, wrong_rows=(3, 4, 8)), p, 3, batch_size=2)
    assert got == pytest.approx([1.0, 1 / 3, 2 / 3])


def test_passkey_settings_are_checked():
    with pytest.raises(ValueError, match="--passkey-depths must be fractions in"):
        PasskeySettings(depths=(1.5,)).check()
    with pytest.raises(ValueError, match="--passkey-needle must hold"):
        PasskeySettings(needle="no key here").check()
    with pytest.raises(ValueError, match="--passkey-trials must be an integer >= 1, got 0"):
        PasskeySettings(trials=0).check()
