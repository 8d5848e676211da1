"""``ropelab lab --export FOLDER``: the trained models as transformers checkpoints.

Each trained model whose layers a transformers family holds ("rope" stacks as Llama,
iRoPE and NoPE stacks as Llama 4 text; :func:`ropelab.hf.save_pretrained`) is written
to ``FOLDER/<task>-<scheme>`` with ``max_position_embeddings`` = the training length;
a language model (the lm task's byte vocabulary) also gets its tokenizer
(:func:`ropelab.hf.byte_tokenizer`), so ``ropelab extend`` and transformers read it as is.
The others are listed as not exported, with the reason.
"""

from __future__ import annotations

import os

__all__ = ["export_models"]


def export_models(settings) -> list[tuple[str, str]]:
    """Write every trained model of the run that maps; ``(label, folder or reason)`` each."""
    from ..hf import byte_tokenizer, save_pretrained
    from ..torch.transformer import Transformer
    from . import checkpoint, store
    from .errors import BadFile
    from .experiment import plan
    from .settings import build_tasks
    from .tasks import TextTask

    tasks = build_tasks(settings)
    out = []
    for run in plan(settings, tasks):
        task = tasks[run.task_name]
        model = Transformer(run.model_config)
        try:
            tensors = checkpoint.check_final(run.folder, model, settings.steps)
        except BadFile as bad:
            out.append((run.label, f"not exported: {bad}"))
            continue
        if tensors is None:  # training failed (a non-finite loss): nothing to write
            out.append((run.label, "not exported: it has no trained weights"))
            continue
        store.load_model_tensors(model, tensors)
        folder = os.path.join(settings.export, f"{run.task_name}-{run.contender.name}")
        try:
            save_pretrained(
                model.eval(), folder, max_position_embeddings=settings.train_len, bos_token_id=task.BOS,
                tokenizer=byte_tokenizer() if isinstance(task, TextTask) else None,
            )
            out.append((run.label, folder))
        except ValueError as err:
            out.append((run.label, f"not exported: {err}"))
    return out
