"""`ropelab lab --export FOLDER`: the lab's trained models as transformers checkpoints
that AutoModelForCausalLM opens with the lab model's logits (and ropelab extend reads)."""

import os

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from ropelab.cli import main  # noqa: E402


def test_export(held_out, tmp_path, capsys):
    export = tmp_path / "hf"
    args = ["lab", "--tasks", "lm", "--text", held_out, "--schemes", "rope", "irope", "alibi", "--steps", "3",
            "--train-len", "8", "--d-model", "16", "--heads", "2", "--layers", "2", "--eval-mults", "1",
            "--extensions", "none", "--eval-examples", "2", "--batch-size", "2", "--jobs", "1", "--threads", "1",
            "--no-progress", "--out", str(tmp_path / "lab"), "--export", str(export)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert f"export lm/rope: {export / 'lm-rope'}" in out
    assert f"export lm/irope: {export / 'lm-irope'}" in out
    assert "export lm/alibi: not exported: layer kind 'alibi'" in out
    assert sorted(os.listdir(export)) == ["lm-irope", "lm-rope"]

    import argparse

    from ropelab.lab import checkpoint, store
    from ropelab.lab.cli import add_arguments, settings_from_args
    from ropelab.lab.experiment import plan
    from ropelab.lab.settings import build_tasks
    from ropelab.torch.transformer import Transformer

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    settings = settings_from_args(parser.parse_args(args[1:]))
    ids = torch.randint(0, 257, (2, 24), generator=torch.Generator().manual_seed(0))
    for run in plan(settings, build_tasks(settings))[:2]:
        lab_model = Transformer(run.model_config).eval()
        store.load_model_tensors(lab_model, checkpoint.check_final(run.folder, lab_model, settings.steps))
        folder = export / f"lm-{run.contender.name}"
        hf = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
        assert hf.config.max_position_embeddings == 8 and hf.config.bos_token_id == 256
        with torch.no_grad():
            assert float((lab_model(ids) - hf(ids).logits).abs().max()) <= 1e-5
        tok = transformers.AutoTokenizer.from_pretrained(folder)
        assert tok("ab", add_special_tokens=False)["input_ids"] == [97, 98] and tok.bos_token_id == 256


def test_export_must_be_a_folder(held_out, tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    assert main(["lab", "--tasks", "lm", "--text", held_out, "--export", str(tmp_path / "file"), "--out", str(tmp_path / "lab")]) == 2
    assert "--export" in capsys.readouterr().err
