"""ropelab.lab pieces: tasks, schemes, schedule, files, report (no full runs here)."""

import csv
import json
import math
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")

from ropelab import scaling  # noqa: E402
from ropelab.config import RopeConfig  # noqa: E402
from ropelab.lab import report, store  # noqa: E402
from ropelab.lab.contenders import CONTENDERS, extended_rope, layer_kinds  # noqa: E402
from ropelab.lab.evaluate import evaluate  # noqa: E402
from ropelab.lab.tasks import CopyTask, RecallTask, TextTask, generator_for  # noqa: E402
from ropelab.lab.train import lr_at, masked_loss_sum  # noqa: E402

# -- copy task -----------------------------------------------------------------


def test_copy_batch_layout():
    task = CopyTask(20)
    batch = task.train_batch(64, 21, generator_for(0, "t", 1))
    assert batch.inputs.shape == batch.targets.shape == batch.mask.shape == (64, 21)
    for b in range(64):
        seq = batch.inputs[b]
        sep = int((seq == task.SEP).nonzero()[0])
        n = sep - 1
        assert 1 <= n <= 10 and seq[0] == task.BOS
        source = seq[1 : n + 1]
        assert len(set(source.tolist())) == n  # distinct symbols
        assert (source >= task.NUM_SPECIAL).all()
        # targets are the inputs shifted by one
        assert torch.equal(batch.targets[b, : 2 * n], seq[1 : 2 * n + 1])
        # scored targets are exactly the copy, at the positions after the separator
        assert torch.equal(batch.targets[b][batch.mask[b]], source)
        assert batch.mask[b].nonzero().flatten().tolist() == list(range(n + 1, 2 * n + 1))


def test_copy_eval_uses_longest_string_and_repeats():
    task = CopyTask(64)
    a = list(task.eval_batches(41, 10, 4, generator_for(3, "eval", "copy", 41)))
    b = list(task.eval_batches(41, 10, 4, generator_for(3, "eval", "copy", 41)))
    assert [x.inputs.shape[0] for x in a] == [4, 4, 2]
    assert all(int(x.mask.sum(1).min()) == 20 for x in a)  # n = (41 - 1) // 2
    assert all(torch.equal(x.inputs, y.inputs) for x, y in zip(a, b, strict=True))


def test_generator_streams_differ_and_repeat():
    one = CopyTask(50).train_batch(8, 32, generator_for(0, "train", 5)).inputs
    again = CopyTask(50).train_batch(8, 32, generator_for(0, "train", 5)).inputs
    other = CopyTask(50).train_batch(8, 32, generator_for(0, "train", 6)).inputs
    assert torch.equal(one, again) and not torch.equal(one, other)


def test_copy_metrics_of_an_oracle_and_of_a_uniform_model():
    task = CopyTask(30)
    batch = task.train_batch(16, 25, generator_for(1, "x"))
    oracle = torch.nn.functional.one_hot(batch.targets, task.vocab_size).float()
    sums = task.score_batch(oracle, batch, masked_loss_sum(oracle, batch))
    assert task.metrics(sums) == {"exact_match": 1.0, "token_accuracy": 1.0}
    # an oracle that gets one copied token of the first row wrong
    wrong = oracle.clone()
    t = int(batch.mask[0].nonzero()[0])
    wrong[0, t] = torch.roll(wrong[0, t], 1)
    m = task.metrics(task.score_batch(wrong, batch, masked_loss_sum(wrong, batch)))
    assert m["exact_match"] == 15 / 16
    assert m["token_accuracy"] == pytest.approx(1 - 1 / int(batch.mask.sum()))


def test_copy_errors():
    with pytest.raises(ValueError, match="num_symbols"):
        CopyTask(1)
    with pytest.raises(ValueError, match="too short"):
        CopyTask(32).check_lengths(8, [8])
    with pytest.raises(ValueError, match="exceed 65"):
        CopyTask(32).check_lengths(32, [32, 64, 128])


# -- recall task ---------------------------------------------------------------


def test_recall_batch_layout():
    task = RecallTask(20)
    batch = task.train_batch(64, 23, generator_for(0, "t", 1))  # up to (23 - 1) // 4 = 5 pairs
    assert batch.inputs.shape == batch.targets.shape == batch.mask.shape == (64, 23)
    orders = set()
    for b in range(64):
        seq = batch.inputs[b]
        sep = int((seq == task.SEP).nonzero()[0])
        n = (sep - 1) // 2
        assert sep == 2 * n + 1 and 1 <= n <= 5 and seq[0] == task.BOS
        keys, values = seq[1:sep:2], seq[2:sep:2]
        assert len(set(keys.tolist())) == n  # distinct keys
        assert ((keys >= 3) & (keys < 23)).all() and ((values >= 23) & (values < 43)).all()
        asked = batch.inputs[b, sep + 1 : sep + 1 + 2 * n : 2]  # every key once more
        assert sorted(asked.tolist()) == sorted(keys.tolist())
        orders.add(tuple(keys.tolist().index(k) for k in asked.tolist()))
        answer = {int(k): int(v) for k, v in zip(keys, values, strict=True)}
        # scored: each query key's value, predicted at the query key's position
        scored = batch.mask[b].nonzero().flatten().tolist()
        assert scored == list(range(sep + 1, sep + 1 + 2 * n, 2))
        assert [int(batch.targets[b, t]) for t in scored] == [answer[int(seq[t])] for t in scored]
        assert torch.equal(batch.targets[b, : 4 * n], seq[1 : 4 * n + 1])
        assert not batch.mask[b, 4 * n + 1 :].any()
    assert len(orders) > 10  # queries come in varying orders


def test_recall_eval_uses_most_pairs_and_scores_answers():
    task = RecallTask(40)
    batches = list(task.eval_batches(35, 10, 4, generator_for(3, "eval", "recall", 35)))
    assert [x.inputs.shape[0] for x in batches] == [4, 4, 2]
    for x in batches:  # n = (35 - 1) // 4 = 8 pairs: SEP at 17, values scored at 18, 20, .. 32
        assert (x.inputs[:, 17] == task.SEP).all()
        assert x.mask.nonzero()[:, 1].unique().tolist() == list(range(18, 33, 2))
    oracle = torch.nn.functional.one_hot(batches[0].targets, task.vocab_size).float()
    assert task.metrics(task.score_batch(oracle, batches[0], None)) == {"accuracy": 1.0, "exact_match": 1.0}
    wrong = oracle.clone()
    wrong[1, 20] = torch.roll(wrong[1, 20], 1)
    m = task.metrics(task.score_batch(wrong, batches[0], None))
    assert m == {"accuracy": 1 - 1 / 32, "exact_match": 0.75}


def test_recall_errors():
    with pytest.raises(TypeError, match=r"recall task num_symbols must be an integer, got True \(bool\)"):
        RecallTask(True)
    with pytest.raises(ValueError, match="recall task num_symbols must be an integer >= 2, got 1"):
        RecallTask(1)
    with pytest.raises(ValueError, match="too short for the recall task"):
        RecallTask(32).check_lengths(8, [8])
    with pytest.raises(ValueError, match=r"recall task lengths \[160\] exceed 129"):
        RecallTask(32).check_lengths(40, [40, 80, 160])


# -- text task -----------------------------------------------------------------


@pytest.fixture
def text_file(tmp_path):
    path = tmp_path / "t.txt"
    path.write_bytes(bytes(range(32, 127)) * 40)
    return str(path)


def test_text_windows_are_slices_of_the_file(text_file):
    task = TextTask([text_file])
    data = open(text_file, "rb").read()
    batch = task.train_batch(4, 16, generator_for(0, "train", 0))
    assert batch.inputs.shape == batch.targets.shape == batch.mask.shape == (4, 16)
    for row_in, row_t in zip(batch.inputs, batch.targets, strict=True):
        assert bytes(row_t.tolist()) in data
        # BOS opens every window; inputs are the targets shifted right by one
        assert int(row_in[0]) == TextTask.BOS and TextTask.BOS >= 256
        assert torch.equal(row_t[:-1], row_in[1:])
    # the first target (guessed from BOS alone) is not scored, every other one is
    assert not batch.mask[:, 0].any() and batch.mask[:, 1:].all()
    held_out = data[int(len(data) * 0.9) :]
    for b in task.eval_batches(20, 5, 2, None):
        assert b.inputs.shape[1] == 20 and b.mask.sum() == b.inputs.shape[0] * 19
        for row_in, row_t in zip(b.inputs, b.targets, strict=True):
            assert bytes(row_t.tolist()) in held_out
            assert int(row_in[0]) == TextTask.BOS and torch.equal(row_t[:-1], row_in[1:])


def test_retrieval_mix_makes_passkey_windows(text_file):
    """A share of the training windows are passkey sequences in extend's short format:
    filler from the training text, the needle, filler, the question and the same key;
    in them only the answer (" " and the key) is scored."""
    import re

    from ropelab.extend.passkey import SHORT

    plain = TextTask([text_file])
    task = TextTask([text_file], retrieval_mix=0.5)
    data = open(text_file, "rb").read()[: len(task.train_data)]
    batch = task.train_batch(8, 40, generator_for(0, "train", 0))
    assert batch.targets.shape == (8, 40) and not batch.mask[:, 0].any() and batch.mask[4:, 1:].all()
    assert not batch.mask[:4, :-5].any() and batch.mask[:4, -5:].all()
    keys = []
    for row_in, row_t in zip(batch.inputs[:4], batch.targets[:4], strict=True):
        text = bytes(row_t.tolist()).decode()
        found = re.fullmatch(r"(.*)key (\d{4})\. (.*)key (\d{4})", text, flags=re.S)
        assert found, text
        assert found.group(2) == found.group(4)  # the question's answer is the needle's key
        filler = (found.group(1) + found.group(3)).encode()
        assert len(filler) == 40 - 18 and filler in data  # one stretch of the training text
        assert int(row_in[0]) == TextTask.BOS and torch.equal(row_t[:-1], row_in[1:])
        keys.append(found.group(2))
    assert len(set(keys)) > 1
    for row_t in batch.targets[4:]:
        assert bytes(row_t.tolist()) in data
    assert SHORT.needle == "key {key}. " and SHORT.digits == 4
    # runs with the mix are other runs; runs without keep their keys
    assert task.fingerprint() == {**plain.fingerprint(), "retrieval_mix": 0.5, "retrieval_scored": "answer"}
    assert "retrieval_mix" not in plain.fingerprint()
    with pytest.raises(ValueError, match="too short for --retrieval-mix"):
        task.check_lengths(17, [17])
    task.check_lengths(18, [18])


@pytest.mark.slow
def test_retrieval_mix_teaches_a_small_model_to_retrieve(tmp_path):
    """The lab's training with passkey windows mixed in (the answer alone scored) gives
    a model that finds the key in passkey windows of held-out text: the model the README's
    extend demo needs (a plain-text model finds none)."""
    from ropelab.lab.train import train
    from ropelab.torch import Transformer, TransformerConfig

    task = TextTask(None, retrieval_mix=0.5)
    with torch.random.fork_rng():  # the other tests' random state is left alone
        torch.manual_seed(0)
        model = Transformer(TransformerConfig(task.vocab_size, d_model=64, num_heads=4, layers=("rope",) * 4))
        train(model, task, length=32, steps=1000, batch_size=32, lr=5e-3, seed=0, stream="train",
              folder=str(tmp_path), checkpoint_every=10_000, progress=False)
    held_out = TextTask(None, retrieval_mix=1.0)
    held_out.train_data = task.eval_data  # filler the model never read
    batch = held_out.train_batch(128, 32, generator_for(1, "probe"))
    model.eval()
    with torch.no_grad():
        right = model(batch.inputs).argmax(-1)[:, -4:] == batch.targets[:, -4:]
    assert right.all(dim=1).float().mean() >= 0.9  # whole keys; chance is 1e-4


class _Uniform(torch.nn.Module):
    """Equal logits for every token: cross-entropy log(V) nats exactly."""

    def __init__(self, vocab):
        super().__init__()
        self.vocab = vocab
        self.dummy = torch.nn.Parameter(torch.zeros(()))

    def forward(self, tokens):
        return torch.zeros(*tokens.shape, self.vocab) + 0 * self.dummy


def test_bits_per_char_of_a_uniform_model_is_log2_vocab(text_file):
    task = TextTask([text_file])
    m = evaluate(_Uniform(task.vocab_size), task, 24, seed=0, num_examples=6, batch_size=4)
    assert m["bits_per_char"] == pytest.approx(math.log2(257), abs=1e-6)  # 256 bytes and BOS
    assert m["perplexity"] == pytest.approx(257.0, rel=1e-6)


class _Oracle(torch.nn.Module):
    def __init__(self, vocab, batches):
        super().__init__()
        self.vocab, self.batches = vocab, batches

    def forward(self, tokens):
        for b in self.batches:
            if torch.equal(b.inputs, tokens):
                return torch.nn.functional.one_hot(b.targets, self.vocab).float() * 50
        raise AssertionError("unexpected batch")


def test_evaluate_with_an_oracle_scores_one():
    task = CopyTask(40)
    g = generator_for(0, "eval", "copy", 33)
    batches = list(task.eval_batches(33, 10, 4, g))  # rows = min(4, 4 * 256 // 33) = 4
    m = evaluate(_Oracle(task.vocab_size, batches), task, 33, seed=0, num_examples=10, batch_size=4)
    assert m == {"exact_match": 1.0, "token_accuracy": 1.0}


def test_default_corpus_is_the_stdlib(tmp_path):
    task = TextTask(None, max_bytes=20_000)
    assert task.paths and all(p.endswith(".py") for p in task.paths)
    assert task.paths == sorted(task.paths)
    assert len(task.train_data) + len(task.eval_data) >= 20_000


def test_text_errors(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        TextTask([str(tmp_path / "missing.txt")])
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="is empty"):
        TextTask([str(empty)])
    with pytest.raises(ValueError, match="is a directory"):
        TextTask([str(tmp_path)])
    small = tmp_path / "small.txt"
    small.write_bytes(b"x" * 100)
    with pytest.raises(ValueError, match="fewer than one window"):
        TextTask([str(small)]).check_lengths(16, [16, 32])


# -- schemes and schedule ------------------------------------------------------------


def test_irope_pattern_follows_llama4():
    from ropelab.torch import pattern

    irope = CONTENDERS["irope"]
    assert layer_kinds(irope, 8) == ("rope", "rope", "rope", "nope") * 2
    assert layer_kinds(irope, 2) == ("rope", "nope")  # too few layers: the last is NoPE
    for n in range(1, 10):  # one iRoPE rule: the library's
        assert layer_kinds(irope, n) == pattern("irope", n)
    assert layer_kinds(CONTENDERS["rope"], 3) == ("rope",) * 3
    assert layer_kinds(CONTENDERS["learned"], 2) == ("nope", "nope")
    assert layer_kinds(CONTENDERS["p-rope"], 2) == ("prope", "prope")


def test_lab_names_do_not_shadow_the_core():
    import ropelab
    import ropelab.lab as lab
    from ropelab import scaling

    assert not hasattr(lab, "SCHEMES") and not hasattr(lab, "PRESETS") and not hasattr(lab, "Scheme")
    assert set(lab.__all__).isdisjoint(set(scaling.__all__) | set(ropelab.__all__))


@pytest.mark.parametrize(
    "name, scheme",
    [("linear", scaling.Linear(4.0)), ("ntk", scaling.NTK(4.0)), ("yarn", scaling.YaRN(4.0, 32))],
)
def test_extended_rope_is_the_scaling_scheme(name, scheme):
    base = RopeConfig(16, theta=10000.0, layout="half")
    ext = extended_rope(base, name, 4.0, 32)
    np.testing.assert_allclose(ext.inv_freq(), scheme.inv_freq(10000.0, 16), rtol=0, atol=0)
    assert ext.layout == "half" and ext.attention_factor == scheme.attention_factor
    if name == "linear":  # PI: every frequency / factor
        np.testing.assert_allclose(ext.inv_freq(), base.inv_freq() / 4.0, rtol=1e-15)
    with pytest.raises(ValueError, match="unknown extension"):
        extended_rope(base, "longrope", 4.0, 32)


def test_lr_schedule_warmup_and_cosine():
    lr, steps = 1e-3, 200
    warmup = 10
    assert lr_at(0, steps, lr) == pytest.approx(lr / warmup)
    assert lr_at(warmup - 1, steps, lr) == pytest.approx(lr)
    assert lr_at(warmup, steps, lr) == pytest.approx(lr)
    mid = warmup + (steps - warmup) / 2
    assert lr_at(int(mid), steps, lr) == pytest.approx(lr * (0.1 + 0.45), rel=1e-12)
    assert lr_at(steps, steps, lr) == pytest.approx(0.1 * lr)


def test_masked_loss_sum_matches_cross_entropy_over_scored_targets():
    task = CopyTask(10)
    batch = task.train_batch(3, 11, generator_for(0, "y"))
    logits = torch.randn(3, 11, task.vocab_size, dtype=torch.float64)
    want = sum(
        -torch.log_softmax(logits[b, t], -1)[batch.targets[b, t]]
        for b in range(3) for t in range(11) if batch.mask[b, t]
    )
    assert float(masked_loss_sum(logits, batch)) == pytest.approx(float(want), rel=1e-6)


# -- files -----------------------------------------------------------------------


def test_write_atomic_leaves_old_file_when_interrupted(tmp_path, monkeypatch):
    path = str(tmp_path / "r.json")
    store.write_json(path, {"a": 1})

    def boom(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(store.os, "replace", boom)
    with pytest.raises(KeyboardInterrupt):
        store.write_json(path, {"a": 2})
    assert json.load(open(path)) == {"a": 1}
    assert os.listdir(tmp_path) == ["r.json"]  # no temporary left behind


def _tiny_model():
    from ropelab.torch.transformer import Transformer, TransformerConfig

    torch.manual_seed(0)
    return Transformer(TransformerConfig(13, d_model=16, num_heads=2, layers=("rope", "nope")))


def test_final_weights_round_trip_through_safetensors(tmp_path):
    from ropelab.lab import checkpoint

    a, b = _tiny_model(), _tiny_model()
    with torch.no_grad():
        for p in a.parameters():
            p.add_(1.0)
    checkpoint.save_final(str(tmp_path), a, [3.0, 2.0], {"seconds": 1.0})
    assert checkpoint.load_final(str(tmp_path), b, 2)
    for (na, pa), (nb, pb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert na == nb and torch.equal(pa, pb)
    assert b.lm_head.weight is b.embed.weight  # tying survives
    with open(tmp_path / "model.safetensors", "rb") as f:
        assert b"pickle" not in f.read(200)
    assert json.load(open(tmp_path / "train.json"))["losses"] == [3.0, 2.0]
    modes = {name: os.stat(tmp_path / name).st_mode & 0o777 for name in os.listdir(tmp_path)}
    assert len(set(modes.values())) == 1, modes  # weights as readable as every other output
    assert not checkpoint.load_final(str(tmp_path / "none"), b, 2)


def _stepped(model, fused=True, steps=3):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, fused=fused)
    x = torch.randint(0, 13, (2, 5))
    for _ in range(steps):
        model(x).sum().backward()
        opt.step()
        opt.zero_grad()
    return opt


@pytest.mark.parametrize("fused", [True, False])
def test_adam_layout_is_what_adamw_holds(fused):
    from ropelab.lab import checkpoint, store

    model = _tiny_model()
    opt = _stepped(model, fused, 1)
    held = {f"optim.{i}.{k}": v for i, entry in opt.state_dict()["state"].items() for k, v in entry.items()}
    assert checkpoint.adam_layout(opt) == store.layout_of(held)


def test_checkpoint_round_trip_restores_optimizer_and_rng(tmp_path):
    from ropelab.lab import checkpoint

    model = _tiny_model()
    opt = _stepped(model)
    torch.manual_seed(7)
    checkpoint.save(str(tmp_path), 3, model, opt, [1.0, 2.0, 3.0])
    expected_draw = torch.rand(3)  # what the RNG gives right after the checkpoint
    fresh = _tiny_model()
    fresh_opt = torch.optim.AdamW(fresh.parameters(), lr=1e-2, fused=True)
    restored = checkpoint.latest(str(tmp_path), fresh, fresh_opt, steps=10)
    assert restored.step == 3 and restored.losses == [1.0, 2.0, 3.0]
    checkpoint.apply(restored, fresh, fresh_opt)
    assert torch.equal(torch.rand(3), expected_draw)
    for pa, pb in zip(model.parameters(), fresh.parameters(), strict=True):
        assert torch.equal(pa, pb)
    sa, sb = opt.state_dict()["state"], fresh_opt.state_dict()["state"]
    assert sa.keys() == sb.keys()
    for k in sa:
        for key in sa[k]:
            assert torch.equal(torch.as_tensor(sa[k][key]), torch.as_tensor(sb[k][key]))
    # the newest two are kept (the older one to fall back to); the third goes
    for step in (4, 5):
        model(torch.randint(0, 13, (2, 5))).sum().backward()
        opt.step()
        opt.zero_grad()
        checkpoint.save(str(tmp_path), step, model, opt, [1.0] * step)
    assert sorted(os.listdir(tmp_path)) == [
        "ckpt-0000004.json", "ckpt-0000004.safetensors", "ckpt-0000005.json", "ckpt-0000005.safetensors",
    ]
    assert checkpoint.latest(str(tmp_path), fresh, fresh_opt, steps=10).step == 5
    assert checkpoint.latest(str(tmp_path), fresh, fresh_opt, steps=5).step == 4  # 5 is not below 5 steps
    assert checkpoint.latest(str(tmp_path / "none"), fresh, fresh_opt, steps=10) is None


# -- report --------------------------------------------------------------------


def _records():
    out = []
    for scheme, ext in (("rope", "none"), ("rope", "yarn"), ("learned", "none")):
        for n in (32, 64):
            value = None if scheme == "learned" and n > 32 else n / 100
            note = "past the table" if value is None else ""
            out.append(dict(scheme=scheme, task="copy", train_len=32, eval_len=n, extension=ext,
                            finetune_steps=0, metric="exact_match", value=value, seed=0, note=note))
    return out


def test_results_json_and_csv_hold_the_same_rows(tmp_path):
    records = _records()
    report.write_results(str(tmp_path), records)
    rows = json.load(open(tmp_path / "results.json"))
    assert rows == [{k: r[k] for k in report.FIELDS} for r in records]
    with open(tmp_path / "results.csv") as f:
        table = list(csv.DictReader(f))
    assert len(table) == len(rows)
    for j, c in zip(rows, table, strict=True):
        assert c["scheme"] == j["scheme"] and int(c["eval_len"]) == j["eval_len"]
        assert (c["value"] == "") if j["value"] is None else math.isclose(float(c["value"]), j["value"])


def test_table_and_plot(tmp_path):
    records = _records()
    text = report.render_table(records)
    lines = text.splitlines()
    assert lines[0].startswith("copy: exact_match")
    assert lines[1].split() == ["32", "64"]
    assert lines[2].split() == ["rope", "0.320", "0.640"]
    assert lines[3].split() == ["rope+yarn", "0.320", "0.640"]
    assert lines[4].split() == ["learned", "0.320", "-"]
    assert "token_accuracy" not in text  # only the metrics the records hold
    more = records + [dict(r, metric="token_accuracy", value=0.5) for r in records if r["scheme"] == "rope"]
    lines = report.render_table(more).splitlines()
    assert lines[6].startswith("copy: token_accuracy")
    assert lines[8].split() == ["rope", "0.500", "0.500"]
    path = report.plot(str(tmp_path), more)
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("preset", ["default", "full"])
def test_presets_cover_the_issue_and_validate(preset, tmp_path):
    from ropelab.lab.settings import build_tasks, from_preset

    settings = from_preset(preset, out=str(tmp_path / "out"))
    settings.validate()
    build_tasks(settings)  # the lengths fit the tasks
    assert {"nope", "rope", "irope", "sinusoidal", "learned", "alibi", "t5", "xpos", "p-rope"} <= set(settings.schemes)
    assert set(settings.extensions) == {"linear", "ntk", "yarn"}
    assert {1, 2, 4, 8} <= set(settings.eval_mults)
    assert "copy" in settings.tasks  # the synthetic task, scored by exact match


def test_sinusoid_amplitude_reaches_the_model():
    from ropelab.lab.contenders import SINUSOID_SCALE
    from ropelab.lab.experiment import model_config
    from ropelab.lab.settings import from_preset

    settings = from_preset("default")
    assert model_config(CONTENDERS["sinusoidal"], 10, settings).absolute_scale == SINUSOID_SCALE
    assert model_config(CONTENDERS["learned"], 10, settings).absolute_scale == 1.0


def _lines(values_by_label, lengths=(16, 32, 64, 128)):
    return {label: dict(zip(lengths, values, strict=True)) for label, values in values_by_label.items()}


def test_a_panel_that_would_show_nothing_becomes_a_note():
    # every line 1 at the training length, then 0 except one: the lines would overlap
    lines = _lines({"nope": [1, 0, 0, 0], "rope": [1, 0, 0, 0], "t5": [1, 0.066, 0, 0], "learned": [1, None, None, None]})
    assert report.panel_note(lines, 16, "exact_match") == (
        "exact match: 1.000 for every scheme at the training length (16); past it 0.000 for every scheme "
        "except t5 (0.066 at 32)"
    )
    lines = _lines({"nope": [0, 0, 0, 0], "rope": [0, 0, 0, 0]})
    assert report.panel_note(lines, 16, "exact_match") == "exact match: 0.000 for every scheme at every length"
    # lines that differ are drawn
    assert report.panel_note(_lines({"a": [1, 0.5, 0, 0], "b": [1, 0.2, 0, 0], "c": [1, 0, 0, 0]}), 16, "token_accuracy") is None
    assert report.panel_note(_lines({"a": [2.3, 2.9, 3.1, 4.0], "b": [2.4, 2.4, 2.3, 2.3]}), 16, "bits_per_char") is None


def test_plot_has_human_labels_families_and_no_empty_panel(tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = []
    for scheme, ext, em, ta in (("nope", "none", 0, 0.3), ("rope", "none", 0, 0.1), ("rope", "yarn", 0, 0.4), ("t5", "none", 0, 0.8)):
        for n in (16, 32):
            records += [dict(scheme=scheme, task="copy", train_len=16, eval_len=n, extension=ext, finetune_steps=0,
                             metric=m, value=1.0 if n == 16 else v, seed=0, note="")
                        for m, v in (("exact_match", em), ("token_accuracy", ta))]
    figures = []
    real_close = plt.close
    monkeypatch.setattr(plt, "close", lambda fig: figures.append(fig))
    report.plot(str(tmp_path), records)
    monkeypatch.setattr(plt, "close", real_close)
    (fig,) = figures
    (ax,) = fig.axes  # exact match is all zero past the training length: a note, not a panel
    assert ax.get_ylabel() == "token accuracy (share of tokens right)" and ax.get_ylim() == (-0.03, 1.03)
    assert ax.get_title() == "copy, trained at 16 tokens"
    styles = {line.get_label(): (line.get_color(), line.get_marker(), line.get_linestyle()) for line in ax.get_lines() if not line.get_label().startswith("_")}
    assert styles["rope+yarn"][2] == "--" and styles["rope"][2] == "-"
    assert len({s[0] for s in styles.values()}) == len(styles) and len({s[1] for s in styles.values()}) == len(styles)
    legend_texts = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend_texts == ["rotary (RoPE and relatives)", "rope", "rope+yarn", "relative biases", "t5",
                            "no or absolute positions", "nope"]
    notes = [t.get_text() for t in fig.texts]
    assert notes == ["copy, exact match: 1.000 for every scheme at the training length (16); past it 0.000 for every scheme"]
    real_close(fig)


def test_every_line_has_its_own_colour_and_marker():
    from ropelab.lab.contenders import CONTENDERS, EXTENSIONS

    styles = report.STYLES
    assert set(CONTENDERS) | {f"rope+{e}" for e in EXTENSIONS} <= set(styles)
    assert len({c for c, _ in styles.values()}) == len(styles) == len({m for _, m in styles.values()})
