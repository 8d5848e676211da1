"""`ropelab extend` end to end on a tiny trained checkpoint: the scheme sweep, the files,
resume after an interruption, --write read back by transformers, the errors."""

import csv
import json
import os
import shutil

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from ropelab import RopeConfig  # noqa: E402
from ropelab.cli import main  # noqa: E402
from ropelab.extend import experiment  # noqa: E402
from ropelab.extend.schemes import NAMES  # noqa: E402
from ropelab.hf import load_pretrained  # noqa: E402
from ropelab.hf.compat import rope_parameters  # noqa: E402


def _args(folder, text, out, *extra):
    return ["extend", folder, "--text", text, "--out", str(out), "--lengths", "1x", "2x", "4x",
            "--eval-tokens", "512", "--passkey-trials", "2", "--passkey-depths", "0", "1",
            "--passkey-digits", "3", "--passkey-needle", "key {key}. ", "--passkey-question", "key",
            "--search-budget", "6", "--search-population", "4", "--search-tokens", "512",
            "--no-progress", "--threads", "1", *extra]


@pytest.fixture(scope="module")
def swept(tiny_checkpoint, held_out, tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep")
    write = out / "written"
    code = main(_args(tiny_checkpoint, held_out, out / "out", "--write", str(write)))
    assert code == 0
    return out / "out", write


def test_every_scheme_at_every_length(swept):
    out, _ = swept
    results = json.loads((out / "results.json").read_text())
    records = results["records"]
    assert [(r["scheme"], r["length"]) for r in records] == [(s, n) for s in NAMES for n in (16, 32, 64)]
    assert results["original_length"] == 16
    for r in records:
        assert r["tokens"] == 512 and 0 < r["bits_per_token"] < 8
        assert len(r["passkey_accuracy"]) == 2 and all(0 <= a <= 1 for a in r["passkey_accuracy"])
    at = {(r["scheme"], r["length"]): r for r in records}
    # at the original length every scheme but LongRoPE (its attention factor) is plain RoPE
    plain = at[("none", 16)]["bits_per_token"]
    for s in ("linear", "ntk", "dynamic", "yarn", "llama3"):
        assert at[(s, 16)]["bits_per_token"] == pytest.approx(plain, rel=1e-5)
    # past it, the schemes differ from plain RoPE and from each other
    assert len({round(at[(s, 64)]["bits_per_token"], 6) for s in NAMES}) == len(NAMES)
    assert at[("linear", 64)]["factor"] == 4.0 and at[("longrope", 16)]["factor"] == 4.0


def test_files(swept):
    out, _ = swept
    names = set(os.listdir(out))
    assert {"results.json", "results.csv", "results.png", "passkey.png", "longrope.json", "longrope-search.json", "points"} <= names
    assert not [n for n in names if n.startswith(".tmp")]
    assert len(os.listdir(out / "points")) == len(NAMES) * 3
    text = (out / "results.json").read_text()
    json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in results.json"))  # strict JSON
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert len(rows) == len(NAMES) * 3 * (1 + 2)  # bits per token, two passkey depths
    search = json.loads((out / "longrope.json").read_text())
    assert search["length"] == 64 and len(search["factors"]) == 8 and search["evaluations"] == 6
    assert search["config"]["rope_parameters"]["long_factor"] == search["factors"]
    assert RopeConfig.from_hf(search["config"]).scaling.long_factor == tuple(search["factors"])


def test_written_folder_opens_in_transformers_with_the_scheme(swept, tiny_checkpoint):
    out, write = swept
    results = json.loads((out / "results.json").read_text())
    best = min((r for r in results["records"] if r["length"] == 64), key=lambda r: r["bits_per_token"])
    assert results["write"]["scheme"] == best["scheme"] and results["write"]["length"] == 64
    assert results["write"]["logits_max_abs_diff"] <= 1e-5
    config = json.loads((write / "config.json").read_text())
    hf = transformers.AutoModelForCausalLM.from_pretrained(write, dtype=torch.float32).eval()
    params = rope_parameters(hf.config)
    want = RopeConfig.from_hf(best["rope"])
    assert params.get("rope_type", "default") == best["rope"]["rope_parameters"]["rope_type"]
    assert RopeConfig.from_hf(write) == want
    if want.scaling is not None and not want.dynamic:
        assert config["max_position_embeddings"] == 64
    # ropelab with the scheme, and transformers reading the folder, at the extended length
    ours = load_pretrained(tiny_checkpoint)
    ours.set_rope(want)
    ids = torch.randint(0, 256, (2, 64), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        diff = (ours(ids) - hf(ids).logits).abs().max()
    assert float(diff) <= 1e-5
    assert sorted(os.listdir(write)) == sorted(
        [*os.listdir(tiny_checkpoint), "ropelab-extend.json"]
    )


@pytest.mark.parametrize("scheme", ["ntk", "longrope", "dynamic"])
def test_write_any_scheme(tiny_checkpoint, held_out, tmp_path, scheme):
    """Each scheme's written folder gives transformers ropelab's logits at 4x."""
    code = main(_args(tiny_checkpoint, held_out, tmp_path / "out", "--schemes", scheme, "--lengths", "4x",
                      "--write", str(tmp_path / "w"), "--write-scheme", scheme, "--passkey-trials", "1"))
    assert code == 0
    write = json.loads((tmp_path / "out" / "results.json").read_text())["write"]
    assert write["scheme"] == scheme and write["logits_max_abs_diff"] <= 1e-5
    assert RopeConfig.from_hf(tmp_path / "w").scaling.name == scheme


def test_resume_after_an_interruption(tiny_checkpoint, held_out, tmp_path, monkeypatch, capsys, swept):
    out = tmp_path / "out"
    real = experiment.bits_per_token
    calls = []

    def dies_after_four(*args, **kwargs):
        if len(calls) == 4:
            raise KeyboardInterrupt  # killed mid-run
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(experiment, "bits_per_token", dies_after_four)
    capsys.readouterr()
    assert main(_args(tiny_checkpoint, held_out, out)) == 130  # Ctrl-C: one line, no traceback
    assert capsys.readouterr().err == "ropelab extend: error: interrupted; rerun the same command to resume\n"
    # killed inside the search, after 4 of its 6 evaluations: those 4 are on disk
    saved = json.loads((out / "longrope-search.json").read_text())
    assert len(saved["scored"]) == 4
    monkeypatch.setattr(experiment, "bits_per_token", real)
    assert main(_args(tiny_checkpoint, held_out, out)) == 0
    # a third run computes nothing
    monkeypatch.setattr(experiment, "bits_per_token", lambda *a, **k: pytest.fail("evaluated again"))
    assert main(_args(tiny_checkpoint, held_out, out)) == 0
    want = json.loads((swept[0] / "results.json").read_text())
    got = json.loads((out / "results.json").read_text())
    assert got["longrope"]["factors"] == want["longrope"]["factors"]
    for a, b in zip(got["records"], want["records"], strict=True):
        assert (a["scheme"], a["length"]) == (b["scheme"], b["length"])
        assert a["bits_per_token"] == pytest.approx(b["bits_per_token"], rel=1e-6)
        assert a["passkey_accuracy"] == b["passkey_accuracy"]


def test_changed_settings_redo_only_what_they_touch(tiny_checkpoint, held_out, tmp_path, monkeypatch):
    out = tmp_path / "out"
    args = _args(tiny_checkpoint, held_out, out, "--schemes", "none", "yarn")
    assert main(args) == 0
    real = experiment.bits_per_token
    calls = []
    monkeypatch.setattr(experiment, "bits_per_token", lambda *a, **k: calls.append(1) or real(*a, **k))
    assert main([*args, "--yarn-beta-fast", "16"]) == 0
    assert len(calls) == 3  # yarn at three lengths; none kept


CASES = [
    (["--schemes", "rope"], "unknown scheme 'rope'"),
    (["--lengths", "abc"], "--lengths takes lengths like 4x"),
    (["--lengths", "0x"], "--lengths lengths must be positive"),
    (["--factor", "0.5"], "--factor must be a number >= 1"),
    (["--stride", "0"], "--stride is a fraction"),
    (["--search-budget", "0"], "--search-budget must be an integer >= 1, got 0"),
    (["--write-scheme", "alibi"], "--write-scheme 'alibi' is not among"),
    (["--passkey-needle", "nothing"], "--passkey-needle must hold {key}"),
    (["--eval-tokens", "10000000"], "the evaluation split has"),
    (["--search-length", "1x"], "must exceed the original length"),
]


@pytest.mark.parametrize(("extra", "message"), CASES)
def test_bad_arguments_exit_2(tiny_checkpoint, held_out, tmp_path, capsys, extra, message):
    assert main(_args(tiny_checkpoint, held_out, tmp_path / "out", *extra)) == 2
    err = capsys.readouterr().err
    assert err.startswith("ropelab extend: error: ") and message in err


def test_folders_that_are_not_checkpoints_exit_2(tiny_checkpoint, held_out, tmp_path, capsys):
    cases = [(str(tmp_path / "nowhere"), "does not exist"), (str(tmp_path), "holds no config.json"),
             (held_out, "is a file")]
    (tmp_path / "gpt2").mkdir()
    (tmp_path / "gpt2" / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    cases.append((str(tmp_path / "gpt2"), "model_type 'gpt2' is not one ropelab reads"))
    notok = tmp_path / "notok"
    notok.mkdir()
    for name in ("config.json", "model.safetensors"):
        (notok / name).write_bytes(open(os.path.join(tiny_checkpoint, name), "rb").read())
    cases.append((str(notok), "holds no tokenizer"))
    for folder, message in cases:
        assert main(_args(folder, held_out, tmp_path / "out")) == 2, folder
        err = capsys.readouterr().err
        assert err.startswith("ropelab extend: error: ") and message in err, err
    assert main(_args(tiny_checkpoint, str(tmp_path / "missing.txt"), tmp_path / "out")) == 2
    assert "--text path" in capsys.readouterr().err
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "mine.txt").write_text("x")
    assert main(_args(tiny_checkpoint, held_out, tmp_path / "out", "--write", str(tmp_path / "busy"))) == 2
    assert "holds files not written by ropelab extend" in capsys.readouterr().err


def test_damaged_weights_exit_1(tiny_checkpoint, held_out, tmp_path, capsys):
    bad = tmp_path / "bad"
    bad.mkdir()
    for name in os.listdir(tiny_checkpoint):
        data = open(os.path.join(tiny_checkpoint, name), "rb").read()
        (bad / name).write_bytes(data[:200] if name == "model.safetensors" else data)
    assert main(_args(str(bad), held_out, tmp_path / "out")) == 1
    err = capsys.readouterr().err
    assert err.startswith("ropelab extend: error: ") and "model.safetensors is not a readable safetensors file" in err


def test_a_larger_search_budget_reuses_the_scores(tiny_checkpoint, held_out, tmp_path, monkeypatch):
    out = tmp_path / "out"
    args = _args(tiny_checkpoint, held_out, out, "--schemes", "longrope", "--lengths", "4x")
    assert main([*args, "--search-budget", "4"]) == 0
    first = json.loads((out / "longrope-search.json").read_text())["scored"]
    real = experiment.bits_per_token
    calls = []
    monkeypatch.setattr(experiment, "bits_per_token", lambda *a, **k: calls.append(1) or real(*a, **k))
    assert main([*args, "--search-budget", "6"]) == 0
    scored = json.loads((out / "longrope-search.json").read_text())["scored"]
    assert scored[:4] == first and len(scored) == 6
    assert len(calls) <= 3  # two new candidates, and the point again if the best factors changed


def test_a_passkey_metric_equal_everywhere_becomes_a_note_in_the_plot():
    from ropelab.extend.report import passkey_flat

    flat = [{"passkey_mean": 0.0}, {"passkey_mean": 0.0}, {"passkey_mean": None}]
    assert passkey_flat(flat) == 0.0
    assert passkey_flat([{"passkey_mean": 0.0}, {"passkey_mean": 0.2}]) is None
    assert passkey_flat([{"passkey_mean": None}]) is None


def test_damaged_resume_files_are_refused_and_redone(tiny_checkpoint, held_out, tmp_path, capsys, swept):
    out = tmp_path / "out"
    shutil.copytree(swept[0], out)
    points = out / "points"
    (points / "none@16.json").write_text("[]")
    edits = {
        "none@32.json": lambda p: p.update(record=None),
        "linear@16.json": lambda p: p["record"].pop("bits_per_token"),  # a record of another version
        "ntk@16.json": lambda p: p["record"].update(bits_per_token=1.0),  # edited by hand
        "yarn@64.json": lambda p: p["record"].update(passkey_accuracy=[None, 1.0]),
    }
    for name, edit in edits.items():
        point = json.loads((points / name).read_text())
        edit(point)
        (points / name).write_text(json.dumps(point))
    search = json.loads((out / "longrope-search.json").read_text())
    search["scored"][0][1] = 1.0  # a search score edited by hand
    (out / "longrope-search.json").write_text(json.dumps(search))
    capsys.readouterr()
    assert main(_args(tiny_checkpoint, held_out, out)) == 0
    err = capsys.readouterr().err
    assert "Traceback" not in err
    refused = [line for line in err.splitlines() if "refused" in line]
    assert len(refused) == 6
    for name in ("none@16.json", *edits):
        assert sum(str(points / name) in line for line in refused) == 1, name
    assert f"search scores refused: {out / 'longrope-search.json'}: does not match its checksum" in err
    want = json.loads((swept[0] / "results.json").read_text())
    got = json.loads((out / "results.json").read_text())
    assert got["longrope"]["factors"] == want["longrope"]["factors"]
    for a, b in zip(got["records"], want["records"], strict=True):
        assert a["bits_per_token"] == pytest.approx(b["bits_per_token"], rel=1e-6)
        assert a["passkey_accuracy"] == b["passkey_accuracy"]
    search = json.loads((out / "longrope-search.json").read_text())
    assert search["scored"][0][1] == want["longrope"]["initial"]["pi"]["value"]

    (out / "longrope-search.json").write_text("[]")
    capsys.readouterr()
    assert main(_args(tiny_checkpoint, held_out, out)) == 0
    assert "longrope-search.json: is not a resume file" in capsys.readouterr().err


def test_longrope_factors_from_the_files_that_hold_them(tmp_path):
    factors = [1.0, 1.0, 1.5, 2.0, 2.0, 3.0, 3.5, 4.0]
    forms = {
        "list": factors,
        "longrope": {"source": "searched", "length": 64, "factors": factors,
                     "config": {"head_dim": 16, "rope_parameters": {"rope_type": "longrope", "long_factor": factors}}},
        "config5": {"model_type": "phi3", "rope_parameters": {"rope_type": "longrope", "long_factor": factors}},
        "config4": {"model_type": "phi3", "rope_theta": 10000.0, "rope_scaling": {"type": "longrope", "long_factor": factors}},
        "parameters": {"rope_type": "longrope", "long_factor": factors},
    }
    for name, data in forms.items():
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(data))
        assert experiment._factors_from_file(str(path), 8) == factors, name


@pytest.mark.parametrize(("data", "message"), [
    ('{"rope_parameters": null}', "an object without long factors"),
    ('{"rope_scaling": [1]}', "an object without long factors"),
    ("[1]", "the file holds [1]; expected a list of 8 positive numbers"),
    ("[true, true, true, true, true, true, true, true]", "the file holds [True"),
    ('{"factors": [1, 1, 1, 1, 1, 1, 1, NaN]}', "is not JSON: NaN"),
    ('{"rope_parameters": {"long_factor": [1, 1, 1, 1, 1, 1, 1, 0]}}', "rope_parameters.long_factor holds"),
    ('{"factors": "abc"}', "factors holds 'abc'"),
    ("{", "is not JSON"),
])
def test_longrope_factors_that_are_not_factors_are_refused(tmp_path, data, message):
    path = tmp_path / "f.json"
    path.write_text(data)
    with pytest.raises(ValueError, match="--longrope-factors") as err:
        experiment._factors_from_file(str(path), 8)
    assert message in str(err.value) and str(path) in str(err.value)


def test_longrope_factors_from_an_earlier_run(tiny_checkpoint, held_out, tmp_path, swept, monkeypatch):
    """The longrope.json an extend run writes is a --longrope-factors file: no search."""
    monkeypatch.setattr(experiment, "search_longrope", lambda *a, **k: pytest.fail("searched"))
    factors = json.loads((swept[0] / "longrope.json").read_text())["factors"]
    args = _args(tiny_checkpoint, held_out, tmp_path / "out", "--schemes", "longrope", "--lengths", "4x",
                 "--longrope-factors", str(swept[0] / "longrope.json"))
    assert main(args) == 0
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["longrope"]["factors"] == factors


def test_damaged_tokenizer_or_config_exit_1(tiny_checkpoint, held_out, tmp_path, capsys):
    def copy(name):
        folder = tmp_path / name
        shutil.copytree(tiny_checkpoint, folder)
        return folder

    garbled = copy("garbled")
    (garbled / "tokenizer.json").write_text("{garbage")
    lost = copy("lost")
    os.unlink(lost / "tokenizer.json")  # tokenizer_config.json alone, naming a backend it cannot build
    gelu = copy("gelu")
    config = json.loads((gelu / "config.json").read_text())
    (gelu / "config.json").write_text(json.dumps({**config, "hidden_act": "gelu"}))
    cases = [(garbled, f"{garbled}: its tokenizer (tokenizer.json, tokenizer_config.json) does not load: "),
             (lost, f"{lost}: its tokenizer (tokenizer_config.json) does not load: "),
             (gelu, f"{gelu / 'config.json'}: hidden_act='gelu'")]
    for folder, message in cases:
        assert main(_args(str(folder), held_out, tmp_path / "out")) == 1, folder
        err = capsys.readouterr().err
        assert err.startswith(f"ropelab extend: error: {message}") and err.count("\n") == 1, err


def test_a_bos_token_the_model_does_not_have_is_a_damaged_checkpoint():
    """The bos token put before every window must be a token id of the model: the
    tokenizer's (else config.json's) outside [0, vocab_size) is named, not an IndexError
    in the embedding later."""
    from types import SimpleNamespace

    from ropelab.extend.source import _bos
    from ropelab.hf import CheckpointError

    assert _bos("ckpt", SimpleNamespace(bos_token_id=256), {}, 257) == 256
    assert _bos("ckpt", SimpleNamespace(bos_token_id=None), {"bos_token_id": 3}, 257) == 3
    assert _bos("ckpt", SimpleNamespace(bos_token_id=None), {}, 257) is None
    with pytest.raises(CheckpointError, match=r"ckpt: its tokenizer's bos_token_id is 300, not a token id"):
        _bos("ckpt", SimpleNamespace(bos_token_id=300), {}, 257)
    for bad in (-1, 257, True, "1", 1.0):
        with pytest.raises(CheckpointError, match=r"config.json's bos_token_id is .*\[0, 257\)"):
            _bos("ckpt", SimpleNamespace(bos_token_id=None), {"bos_token_id": bad}, 257)
