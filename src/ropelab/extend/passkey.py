"""Passkey retrieval: a random key hidden in filler text, asked for at the end.

As in the Position Interpolation paper (Chen et al. 2023, arXiv:2306.15595) and
Landmark Attention (Mohtashami and Jaggi 2023, arXiv:2305.16300): a prompt of exactly
``L`` positions holds filler, the *needle* (``"The pass key is {key}. Remember it. {key}
is the pass key. "`` by default) at a depth (the fraction of the filler before it), more
filler, then the *question* (``"What is the pass key? The pass key is"``) followed by the
*answer* (``" {key}"``). The filler is a stretch of the held-out text. The key is right
when the model's most likely next token at every answer position is the key's token
there (teacher forcing; the same as greedy decoding producing exactly the key).
Accuracy is counted per length and depth over seeded trials; the prompts depend on the
seed, the length, the depth and the trial only, so every scheme sees the same prompts.

Shapes: N prompts, L length.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..checks import check_int
from .dist import SINGLE, Dist

__all__ = ["SHORT", "PasskeySettings", "Prompts", "accuracy", "assemble", "make_prompts"]


@dataclass(frozen=True)
class PasskeySettings:
    depths: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)
    trials: int = 10
    digits: int = 5
    needle: str = "The pass key is {key}. Remember it. {key} is the pass key. "
    question: str = "What is the pass key? The pass key is"
    answer: str = " {key}"

    def check(self) -> None:
        if not self.depths or any(not 0.0 <= d <= 1.0 for d in self.depths):
            raise ValueError(f"--passkey-depths must be fractions in [0, 1], got {list(self.depths)}")
        for name in ("trials", "digits"):
            check_int(f"--passkey-{name}", getattr(self, name), minimum=1)
        for name in ("needle", "answer"):
            if "{key}" not in getattr(self, name):
                raise ValueError(f"--passkey-{name} must hold {{key}}, got {getattr(self, name)!r}")
        try:
            for name in ("needle", "answer"):
                getattr(self, name).format(key="0")
        except (KeyError, IndexError, ValueError) as err:
            raise ValueError(f"--passkey-{name}: a template with {{key}} as its only field, got {getattr(self, name)!r} ({err})") from None


#: a format short enough for models trained on a few dozen tokens (18 bytes with its
#: key): ``ropelab lab --retrieval-mix`` trains on it, and ``ropelab extend --passkey-digits 4
#: --passkey-needle 'key {key}. ' --passkey-question key`` asks for it
SHORT = PasskeySettings(digits=4, needle="key {key}. ", question="key")


def assemble(filler: list[int], depth: float, needle: list[int], question: list[int], answer: list[int],
             bos: int | None = None) -> list[int]:
    """One passkey sequence: ``[bos] filler[:k] needle filler[k:] question answer``, the
    needle after ``k = round(depth * len(filler))`` tokens of filler."""
    before = int(round(depth * len(filler)))
    head = [bos] if bos is not None else []
    return head + filler[:before] + needle + filler[before:] + question + answer


@dataclass(frozen=True)
class Prompts:
    """Prompts of one length: ``inputs`` (N, L) long, ``answer`` (N, A) long (the key's
    tokens), ``depth`` (N,) index into the settings' depths. ``answer`` is predicted at
    the last A positions."""

    inputs: torch.Tensor
    answer: torch.Tensor
    depth: torch.Tensor


def _encode(tokenizer, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])


def _answer_tokens(tokenizer, question: str, answer: str) -> tuple[list[int], list[int]]:
    """Question and answer tokens, the answer as it tokenizes after the question."""
    q = _encode(tokenizer, question)
    both = _encode(tokenizer, question + answer)
    if both[: len(q)] == q and len(both) > len(q):
        return q, both[len(q):]
    return q, _encode(tokenizer, answer)


def make_prompts(tokenizer, filler: torch.Tensor, length: int, settings: PasskeySettings, *, seed: int,
                 bos: int | None) -> Prompts | None:
    """Every (depth, trial) prompt of ``length`` positions; None when the needle, the
    question and the answer alone do not fit in ``length``."""
    rows, answers, depths = [], [], []
    for d, depth in enumerate(settings.depths):
        for trial in range(settings.trials):
            rng = np.random.default_rng([seed, length, d, trial])
            key = "".join(str(v) for v in rng.integers(0, 10, settings.digits))
            needle = _encode(tokenizer, settings.needle.format(key=key))
            question, answer = _answer_tokens(tokenizer, settings.question, settings.answer.format(key=key))
            fixed = (bos is not None) + len(needle) + len(question) + len(answer)
            room = length + 1 - fixed  # the last answer token is a target only
            if room < 0:
                return None
            if room > len(filler):
                raise ValueError(
                    f"the evaluation split has {len(filler)} tokens, fewer than the passkey filler of "
                    f"{room} at length {length}; pass more text"
                )
            at = int(rng.integers(0, len(filler) - room + 1))
            seq = assemble(filler[at : at + room].tolist(), depth, needle, question, answer, bos)
            rows.append(seq[:-1])
            answers.append(answer)
            depths.append(d)
    width = max(len(a) for a in answers)
    if any(len(a) != width for a in answers):
        # keys of one digit count can tokenize to different lengths (BPE merges): each is
        # right-aligned (the prompts end with their answers) and its padding (-1) not scored
        answers = [[-1] * (width - len(a)) + a for a in answers]
    return Prompts(torch.tensor(rows), torch.tensor(answers), torch.tensor(depths))


@torch.inference_mode()
def accuracy(model, prompts: Prompts, num_depths: int, *, batch_size: int, dist: Dist = SINGLE,
             device="cpu") -> list[float]:
    """Share of prompts whose key is retrieved, per depth (the ranks' counts added)."""
    mine = list(dist.mine(len(prompts.inputs)))
    right = [0.0] * num_depths
    total = [0.0] * num_depths
    width = prompts.answer.shape[1]
    for i in range(0, len(mine), batch_size):
        rows = torch.tensor(mine[i : i + batch_size])
        logits = model(prompts.inputs[rows].to(device))  # (B, L, V)
        guess = logits[:, -width:].argmax(-1).cpu()  # (B, A)
        answer = prompts.answer[rows]
        hit = ((guess == answer) | (answer < 0)).all(dim=1) & (answer >= 0).any(dim=1)
        for depth, ok in zip(prompts.depth[rows].tolist(), hit.tolist(), strict=True):
            right[depth] += ok
            total[depth] += 1
    sums = dist.sum(right + total)
    return [r / t for r, t in zip(sums[:num_depths], sums[num_depths:], strict=True)]
