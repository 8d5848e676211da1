"""The lab's tasks: synthetic copy and associative recall (exact match), character-level
language modelling.

Every batch is a pure function of ``(seed, purpose, step or length)``: a fresh
``torch.Generator`` is seeded from those numbers, so a resumed run sees exactly the
batches an uninterrupted one would, and every scheme is evaluated on the same examples.

Shapes: B batch, T time (the model's input length).
A batch is ``inputs (B, T)``, ``targets (B, T)`` (inputs shifted by one) and
``mask (B, T)`` (which targets count in the loss and the metric).
"""

from __future__ import annotations

import glob
import hashlib
import math
import os
import sysconfig
from dataclasses import dataclass

import torch

from ..checks import check_int
from ..extend.passkey import SHORT, assemble

__all__ = ["Batch", "CopyTask", "RecallTask", "TextTask", "generator_for", "default_corpus_files"]


@dataclass(frozen=True)
class Batch:
    inputs: torch.Tensor  # (B, T) long
    targets: torch.Tensor  # (B, T) long
    mask: torch.Tensor  # (B, T) bool: targets that are scored

    def rows(self, start: int, stop: int) -> Batch:
        """Rows ``start:stop`` (one rank's slice of a global batch)."""
        return Batch(self.inputs[start:stop], self.targets[start:stop], self.mask[start:stop])

    def to(self, device) -> Batch:
        return Batch(self.inputs.to(device), self.targets.to(device), self.mask.to(device))


def generator_for(seed: int, *parts: object) -> torch.Generator:
    """A torch generator seeded by ``seed`` and a purpose (e.g. ``"train", step``).

    The purpose is hashed, so streams for different steps, lengths and tasks do not
    overlap the way ``seed + step`` streams would.
    """
    text = "/".join(str(p) for p in (seed, *parts))
    digest = hashlib.sha256(text.encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))


class _StringTask:
    """Shared by the synthetic tasks: strings of ``n`` items, ``PER_ITEM`` tokens each
    (plus one), drawn by ``_strings(sizes, width, g)``. Training draws every ``n`` that
    fits the length; evaluation uses the largest. Scored targets are counted right per
    token and per string (all of a string's scored targets right)."""

    name = ""
    PAD, BOS, SEP = 0, 1, 2
    NUM_SPECIAL = 3
    higher_is_better = True
    PER_ITEM = 2
    min_train_len = 9
    SHORTEST = ""  # what the shortest training string holds (for the error message)

    def __init__(self, num_symbols: int):
        self.num_symbols = check_int(f"{self.name} task num_symbols", num_symbols, minimum=2)

    def _fill_note(self) -> str:
        """Why lengths past ``max_len`` (the longest input length the task can fill, or
        None for no bound) cannot be filled, for the error message."""
        raise NotImplementedError

    def check_lengths(self, train_len: int, eval_lens) -> None:
        if train_len < self.min_train_len:
            raise ValueError(
                f"--train-len {train_len} is too short for the {self.name} task; it needs >= "
                f"{self.min_train_len} ({self.SHORTEST})"
            )
        if self.max_len is not None:
            too_long = [n for n in eval_lens if n > self.max_len]
            if too_long:
                raise ValueError(
                    f"{self.name} task lengths {too_long} exceed {self.max_len}: {self._fill_note()}; "
                    "lower --train-len or --eval-mults, or raise --symbols"
                )

    def _strings(self, sizes: list[int], width: int, g: torch.Generator) -> Batch:
        raise NotImplementedError

    def _padded(self, seqs: list[torch.Tensor], scored: list[tuple[int, int]], width: int, step: int = 1) -> Batch:
        """Rows ``seq[:-1]`` -> ``seq[1:]`` padded to ``width``; targets ``start:stop:step`` scored."""
        inputs = torch.full((len(seqs), width), self.PAD, dtype=torch.long)
        targets = torch.full((len(seqs), width), self.PAD, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.bool)
        for b, (seq, (start, stop)) in enumerate(zip(seqs, scored, strict=True)):
            n = len(seq) - 1
            inputs[b, :n] = seq[:-1]
            targets[b, :n] = seq[1:]
            mask[b, start:stop:step] = True
        return Batch(inputs, targets, mask)

    def train_batch(self, batch_size: int, length: int, g: torch.Generator) -> Batch:
        longest = (length - 1) // self.PER_ITEM
        sizes = torch.randint(1, longest + 1, (batch_size,), generator=g).tolist()
        return self._strings(sizes, length, g)

    def eval_batches(self, length: int, num_examples: int, batch_size: int, g: torch.Generator):
        n = (length - 1) // self.PER_ITEM
        for start in range(0, num_examples, batch_size):
            yield self._strings([n] * min(batch_size, num_examples - start), length, g)

    def score_batch(self, logits: torch.Tensor, batch: Batch, loss_sum: torch.Tensor) -> dict:
        """Sums for one batch: right targets, scored targets, strings all right, strings.
        logits (B, T, V)."""
        hit = logits.argmax(-1) == batch.targets  # (B, T)
        return {
            "right": int((hit & batch.mask).sum()),
            "scored": int(batch.mask.sum()),
            "exact": int((hit | ~batch.mask).all(dim=1).sum()),
            "strings": int(batch.inputs.shape[0]),
        }


class CopyTask(_StringTask):
    """Copy a string of random symbols: ``BOS x1..xn SEP x1..xn``; score the copied part.

    After Kazemnejad et al. 2023 ("The Impact of Positional Encoding on Length
    Generalization in Transformers", arXiv:2305.19466), scaled down. Training strings
    have every length ``n`` from 1 to the longest that fits the training length, so
    every position up to it is trained; evaluation at length ``T`` uses the longest
    string that fits (``n = (T - 1) // 2``).

    The symbols of one string are distinct (drawn without replacement) by default: a
    copy can then be found by content once the model knows which token came before
    which, the induction-head mechanism a two-layer model learns within a CPU minute.
    That bounds the length: ``n <= num_symbols``.
    """

    name = "copy"
    metric = "exact_match"
    metric_names = ("exact_match", "token_accuracy")
    min_train_len = 9  # n >= 4 at the training length
    SHORTEST = "a string of >= 4 symbols, a separator and its copy"

    def __init__(self, num_symbols: int = 256, *, distinct: bool = True):
        super().__init__(num_symbols)
        self.distinct = bool(distinct)
        self.vocab_size = num_symbols + self.NUM_SPECIAL

    @property
    def max_len(self) -> int | None:
        """The longest input length the task can fill (distinct symbols run out)."""
        return 2 * self.num_symbols + 1 if self.distinct else None

    def fingerprint(self) -> dict:
        return {"task": self.name, "num_symbols": self.num_symbols, "distinct": self.distinct}

    def _fill_note(self) -> str:
        return (
            f"strings of distinct symbols from {self.num_symbols} symbols fill at most "
            f"2 * {self.num_symbols} + 1 positions"
        )

    def _strings(self, lengths: list[int], width: int, g: torch.Generator) -> Batch:
        seqs = []
        for n in lengths:
            if self.distinct:
                x = torch.randperm(self.num_symbols, generator=g)[:n]
            else:
                x = torch.randint(0, self.num_symbols, (n,), generator=g)
            x = x + self.NUM_SPECIAL
            seqs.append(torch.cat([torch.tensor([self.BOS]), x, torch.tensor([self.SEP]), x]))  # (2n + 2,)
        # input position n + 1 holds SEP and predicts x1; n + i predicts x_i
        return self._padded(seqs, [(n + 1, 2 * n + 1) for n in lengths], width)

    def metrics(self, sums: dict) -> dict:
        return {
            "exact_match": sums["exact"] / sums["strings"],
            "token_accuracy": sums["right"] / sums["scored"],
        }


class RecallTask(_StringTask):
    """Multi-query associative recall: ``BOS k1 v1 .. kn vn SEP kq1 vq1 .. kqn vqn``.

    A needle in a haystack at toy scale, after the multi-query associative recall
    (MQAR) of Arora et al. 2023 (arXiv:2312.04927): n key-value pairs with distinct
    keys and random values, a separator, then every key once more in a random order,
    each followed by its value. Only those values are scored (accuracy over them, and
    exact match: all of a string's values right), so the metric is retrieval from
    anywhere in the context; with one query per string the tiny models learned
    nothing in the default budget (accuracy 0.14 at the training length, a guess among
    the values present). Training strings have every n that fits; evaluation at length
    ``T`` the most (``n = (T - 1) // 4``). Keys and values come from separate alphabets
    of ``num_symbols`` each, which bounds ``n <= num_symbols``.
    """

    name = "recall"
    metric = "accuracy"
    metric_names = ("accuracy", "exact_match")
    PER_ITEM = 4  # a pair, then its query
    min_train_len = 9  # two pairs and their two queries
    SHORTEST = "two key-value pairs, a separator and two queries"

    def __init__(self, num_symbols: int = 128):
        super().__init__(num_symbols)
        self.vocab_size = self.NUM_SPECIAL + 2 * num_symbols  # keys, then values

    @property
    def max_len(self) -> int:
        return 4 * self.num_symbols + 1

    def fingerprint(self) -> dict:
        return {"task": self.name, "num_symbols": self.num_symbols, "queries": "all"}

    def _fill_note(self) -> str:
        return f"{self.num_symbols} distinct keys fill at most 4 * {self.num_symbols} + 1 positions"

    def _strings(self, pairs: list[int], width: int, g: torch.Generator) -> Batch:
        seqs = []
        for n in pairs:
            keys = torch.randperm(self.num_symbols, generator=g)[:n] + self.NUM_SPECIAL
            values = torch.randint(0, self.num_symbols, (n,), generator=g) + self.NUM_SPECIAL + self.num_symbols
            order = torch.randperm(n, generator=g)
            body = torch.stack([keys, values], dim=1).reshape(-1)  # k1 v1 .. kn vn
            queries = torch.stack([keys[order], values[order]], dim=1).reshape(-1)
            seqs.append(torch.cat([torch.tensor([self.BOS]), body, torch.tensor([self.SEP]), queries]))  # (4n + 2,)
        # input position 2n + 2 + 2j holds query key j and predicts its value
        return self._padded(seqs, [(2 * n + 2, 4 * n + 1) for n in pairs], width, step=2)

    def metrics(self, sums: dict) -> dict:
        return {"accuracy": sums["right"] / sums["scored"], "exact_match": sums["exact"] / sums["strings"]}


def default_corpus_files() -> list[str]:
    """The Python standard library's top-level ``.py`` files, sorted (always on the machine)."""
    stdlib = sysconfig.get_paths()["stdlib"]
    return sorted(glob.glob(os.path.join(glob.escape(stdlib), "*.py")))


class TextTask:
    """Character-level (byte-level) language modelling on text files.

    Bits per character over every position of a window of the evaluation length, the
    measure of the ALiBi paper (Press et al. 2022, arXiv:2108.12409) at character scale.
    The last tenth of the text is held out for evaluation.
    """

    name = "lm"
    metric = "bits_per_char"
    metric_names = ("bits_per_char", "perplexity")
    higher_is_better = False
    min_train_len = 8
    #: bytes, then the beginning-of-sequence token that opens every window
    BOS = 256
    vocab_size = 257

    def __init__(self, paths: list[str] | None = None, *, max_bytes: int = 4_000_000, retrieval_mix: float = 0.0):
        #: the share of training windows that are passkey sequences (see train_batch)
        self.retrieval_mix = retrieval_mix
        explicit = paths is not None
        paths = list(paths) if explicit else default_corpus_files()
        if not paths:
            raise ValueError("the lm task found no text files (the stdlib holds no .py files?); pass --text PATH")
        chunks, total = [], 0
        for path in paths:
            if not os.path.exists(path):
                raise ValueError(f"--text path {path!r} does not exist")
            if os.path.isdir(path):
                raise ValueError(f"--text path {path!r} is a directory; pass text files")
            try:
                with open(path, "rb") as f:
                    data = f.read(max_bytes - total)
            except OSError as err:
                raise ValueError(f"--text file {path!r} cannot be read: {err.strerror}") from None
            if explicit and not data:
                raise ValueError(f"--text file {path!r} is empty")
            chunks.append(data)
            total += len(data)
            if total >= max_bytes:
                break
        text = b"\n".join(chunks)
        self.paths = paths
        self.digest = hashlib.sha256(text).hexdigest()[:16]
        data = torch.frombuffer(bytearray(text), dtype=torch.uint8).long()
        split = int(len(data) * 0.9)
        self.train_data, self.eval_data = data[:split], data[split:]

    def fingerprint(self) -> dict:
        found = {"task": self.name, "corpus_sha256": self.digest, "bytes": len(self.train_data) + len(self.eval_data)}
        if self.retrieval_mix:  # runs without it keep the keys they always had
            found["retrieval_mix"] = self.retrieval_mix
            found["retrieval_scored"] = "answer"
        return found

    def check_lengths(self, train_len: int, eval_lens) -> None:
        if train_len < self.min_train_len:
            raise ValueError(f"--train-len {train_len} is too short for the lm task; it needs >= {self.min_train_len}")
        if self.retrieval_mix and train_len < self._passkey_parts("0" * SHORT.digits)[3]:
            raise ValueError(
                f"--train-len {train_len} is too short for --retrieval-mix: a passkey sequence "
                f"({SHORT.needle!r}, {SHORT.question!r}, the answer) needs more"
            )
        longest = max([train_len, *eval_lens])
        for label, part in (("training", self.train_data), ("held-out", self.eval_data)):
            if len(part) < longest:
                raise ValueError(
                    f"the text's {label} part has {len(part)} bytes, fewer than one window of "
                    f"{longest}; pass more text or shorter lengths"
                )

    def _batch(self, windows: torch.Tensor) -> Batch:
        """Inputs ``BOS w0 .. w(T-2)``, targets ``w0 .. w(T-1)`` for windows (B, T); w0, the
        guess from BOS alone, is not scored, so each window scores T - 1 characters, each
        with everything before it in the window as context. The BOS token anchors position:
        without it a NoPE model has no fixed token to count from (Kazemnejad et al. 2023)."""
        bos = torch.full((windows.shape[0], 1), self.BOS, dtype=windows.dtype)
        mask = torch.ones(windows.shape, dtype=torch.bool)
        mask[:, 0] = False
        return Batch(torch.cat([bos, windows[:, :-1]], dim=1), windows, mask)

    def train_batch(self, batch_size: int, length: int, g: torch.Generator) -> Batch:
        """Windows of the training text; with ``retrieval_mix`` that share of them
        (the first rows) passkey sequences of which only the answer (the key after the
        question) is scored. Their filler is text the model reads in the other rows;
        scored too, it drowned the key's few tokens: with half the windows passkey
        sequences, a 4-layer width-64 model at 32 tokens had learned no retrieval by step
        2500 of 3000 on two of three seeds, and with the answer alone scored it retrieved
        every key within 750 steps on both seeds tried."""
        starts = torch.randint(0, len(self.train_data) - length, (batch_size,), generator=g)
        windows = torch.stack([self.train_data[s : s + length] for s in starts.tolist()])  # (B, T)
        passkeys = round(self.retrieval_mix * batch_size)
        for row in range(passkeys):
            windows[row] = self._passkey_window(length, g)
        batch = self._batch(windows)
        batch.mask[:passkeys, : length - len(SHORT.answer.format(key="0" * SHORT.digits))] = False
        return batch

    @staticmethod
    def _passkey_parts(key: str) -> tuple[list[int], list[int], list[int], int]:
        """Needle, question and answer bytes of :data:`ropelab.extend.passkey.SHORT`, and their length."""
        needle = list(SHORT.needle.format(key=key).encode())
        question = list(SHORT.question.encode())
        answer = list(SHORT.answer.format(key=key).encode())
        return needle, question, answer, len(needle) + len(question) + len(answer)

    def _passkey_window(self, length: int, g: torch.Generator) -> torch.Tensor:
        """A training window that is a passkey sequence in ``ropelab extend``'s format
        (:func:`ropelab.extend.passkey.assemble`): filler from the training text, the
        needle at a random depth, the question and the key at the end. Copying the key is
        then something the model can learn; plain text at a few dozen bytes never asks it."""
        key = "".join(str(d) for d in torch.randint(0, 10, (SHORT.digits,), generator=g).tolist())
        needle, question, answer, fixed = self._passkey_parts(key)
        room = length - fixed
        start = int(torch.randint(0, len(self.train_data) - room, (1,), generator=g))
        depth = float(torch.rand(1, generator=g))
        filler = self.train_data[start : start + room].tolist()
        return torch.tensor(assemble(filler, depth, needle, question, answer))

    def eval_batches(self, length: int, num_examples: int, batch_size: int, g: torch.Generator):
        # num_examples windows spread evenly over the held-out text (deterministic, no g)
        span = len(self.eval_data) - length
        count = max(1, num_examples)
        starts = [round(i * span / max(1, count - 1)) for i in range(count)] if span > 0 else [0]
        for i in range(0, len(starts), batch_size):
            yield self._batch(torch.stack([self.eval_data[s : s + length] for s in starts[i : i + batch_size]]))

    def score_batch(self, logits: torch.Tensor, batch: Batch, loss_sum: torch.Tensor) -> dict:
        return {"nats": float(loss_sum), "tokens": int(batch.mask.sum())}

    def metrics(self, sums: dict) -> dict:
        nats = sums["nats"] / sums["tokens"]
        return {"bits_per_char": nats / math.log(2), "perplexity": math.exp(nats)}
