"""Settings of a lab run: presets (data), command-line overrides, validation.

Everything that can be wrong with the arguments is found here, before any model is
trained, and raised naming the flag, the bad value and what was expected (through
:mod:`ropelab.checks`: ``TypeError`` for a wrong type, ``ValueError`` for a wrong value).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, replace

from ..checks import check_float, check_int
from .contenders import CONTENDERS, EXTENSIONS, available_contenders, check_contender

__all__ = ["DDP_TIMEOUT_MINUTES", "MAX_EVAL_LEN", "SETTINGS_PRESETS", "TASKS", "LabSettings", "build_tasks"]

#: task name -> one line for ``--help`` (the tasks themselves, which need torch, are
#: :mod:`ropelab.lab.tasks`; the parser and the checks here do not import it)
TASKS = {
    "copy": "copy a random token string after a separator; exact match over the copied part",
    "recall": "multi-query associative recall: key-value pairs, then every key again; accuracy of the values",
    "lm": "character-level language modelling (bytes); bits per character, lower is better",
}

#: attention over longer windows costs too much memory for a laptop-scale lab
MAX_EVAL_LEN = 32768

#: how long a DDP process waits for the others before it gives up (torch's own default,
#: 30 minutes, is long to wait for a stopped process); rank 0 evaluating a model while
#: the others wait is the longest legitimate pause
DDP_TIMEOUT_MINUTES = 10.0

#: presets of the lab's settings are data; flags override single entries. "default"
#: fits 5 minutes on 2 CPU cores.
SETTINGS_PRESETS: dict[str, dict] = {
    "default": dict(
        # copy, at 16 tokens (strings of up to 7 symbols), is the task on which every
        # scheme trains to >= 0.9 exact match within the budget: NoPE needs the steps
        # (exact match 0.74 after 2000 steps, 0.86 at 2400, 0.98 at 2600, 1.0 at 2800
        # and 3000), the others fewer.
        # On lm at 32 tokens, 1200 steps of each scheme fit the budget and leave NoPE
        # 11% behind RoPE in bits per character (6% after 3600 steps): lm is a flag
        # away (--tasks lm --train-len 32 --steps 1200; lab README).
        tasks=("copy",),
        train_len=16,
        eval_mults=(1, 2, 4, 8),
        # four narrow layers rather than two wide ones: NoPE infers order from the causal
        # mask and needs the depth (two layers left it 23% behind RoPE on lm)
        d_model=48,
        layers=4,
        heads=6,  # head dim 8: more, narrower heads helped every scheme, ALiBi most
        steps=2800,
        batch_size=32,
        lr=5e-3,
        extensions=EXTENSIONS,
        finetune_steps=0,
        eval_examples=256,
        symbols=128,
        checkpoint_every=250,
    ),
    "full": dict(
        tasks=("copy", "lm"),
        train_len=64,
        eval_mults=(1, 2, 4, 8, 16),
        d_model=128,
        layers=4,
        heads=4,
        steps=4000,
        batch_size=64,
        lr=2e-3,
        extensions=EXTENSIONS,
        finetune_steps=200,
        eval_examples=512,
        symbols=512,
        checkpoint_every=250,
    ),
}


@dataclass(frozen=True)
class LabSettings:
    out: str
    schemes: tuple[str, ...]
    tasks: tuple[str, ...]
    train_len: int
    eval_mults: tuple[int, ...]
    d_model: int
    layers: int
    heads: int
    steps: int
    batch_size: int
    lr: float
    seed: int = 0
    extensions: tuple[str, ...] = EXTENSIONS
    finetune_steps: int = 0
    eval_examples: int = 128
    symbols: int = 128
    checkpoint_every: int = 100
    text: tuple[str, ...] | None = None
    threads: int | None = None
    jobs: int | None = None
    device: str = "auto"
    progress: bool = True
    ddp_timeout: float = DDP_TIMEOUT_MINUTES  # minutes
    export: str | None = None  # folder for transformers checkpoints of the trained models
    retrieval_mix: float = 0.0  # share of lm training windows that are passkey sequences

    @property
    def eval_lens(self) -> tuple[int, ...]:
        return tuple(self.train_len * m for m in self.eval_mults)

    def to_json(self) -> dict:
        return asdict(self)

    def validate(self, world: int = 1) -> None:
        """Raise for anything that would fail later (no training happens here): TypeError
        for a value of the wrong type (settings made in Python), ValueError otherwise."""
        if os.path.exists(self.out) and not os.path.isdir(self.out):
            raise ValueError(f"--out {self.out!r} is a file; pass a directory (it is created if missing)")
        if not self.schemes:
            raise ValueError(f"--schemes is empty; known schemes: {', '.join(CONTENDERS)}")
        for name in self.schemes:
            check_contender(name)
        if not self.tasks:
            raise ValueError(f"--tasks is empty; known tasks: {', '.join(TASKS)}")
        for name in self.tasks:
            if name not in TASKS:
                raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(TASKS)}")
        for name in self.extensions:
            if name not in EXTENSIONS:
                raise ValueError(f"unknown extension {name!r}; known extensions: {', '.join(EXTENSIONS)} (or none)")
        for flag, names, kind in (("--schemes", self.schemes, "a scheme"), ("--tasks", self.tasks, "a task"),
                                  ("--extensions", self.extensions, "an extension")):
            if len(set(names)) != len(names):  # two runs of one model would share its folder
                raise ValueError(f"{flag} names {kind} twice: {' '.join(names)}")
        for name in ("train_len", "d_model", "layers", "heads", "steps", "batch_size", "eval_examples", "symbols", "checkpoint_every"):
            check_int(_flag(name), getattr(self, name), minimum=1)
        if not self.eval_mults:
            raise ValueError("--eval-mults is empty; give multiples of --train-len such as 1 2 4")
        for m in self.eval_mults:
            check_int("an entry of --eval-mults", m, minimum=1)
        if max(self.eval_lens) > MAX_EVAL_LEN:
            raise ValueError(
                f"evaluation length {max(self.eval_lens)} (--train-len {self.train_len} x "
                f"{max(self.eval_mults)}) exceeds the lab's limit of {MAX_EVAL_LEN} tokens"
            )
        if not 0 < check_float("--lr", self.lr) < 1:
            raise ValueError(f"--lr must be a number in (0, 1), got {self.lr!r}")
        check_int("--finetune-steps", self.finetune_steps, minimum=0)
        if self.d_model % self.heads:
            raise ValueError(f"--d-model {self.d_model} is not divisible by --heads {self.heads}")
        if (self.d_model // self.heads) % 2:
            raise ValueError(
                f"head dimension --d-model / --heads = {self.d_model // self.heads} is odd; "
                "rotary schemes rotate pairs of features and need it even"
            )
        if self.batch_size % world:
            raise ValueError(f"--batch-size {self.batch_size} is not divisible by the {world} processes")
        check_float("--retrieval-mix", self.retrieval_mix, minimum=0.0, maximum=1.0)
        if self.retrieval_mix and "lm" not in self.tasks:
            raise ValueError(f"--retrieval-mix is given but the lm task is not among --tasks {','.join(self.tasks)}")
        if self.text is not None and "lm" not in self.tasks:
            raise ValueError(f"--text is given but the lm task is not among --tasks {','.join(self.tasks)}")
        for name in ("threads", "jobs"):
            if getattr(self, name) is not None:
                check_int(_flag(name), getattr(self, name), minimum=1)
        if self.export is not None and os.path.isfile(self.export):
            raise ValueError(f"--export {self.export!r} is a file; pass a folder (created if missing)")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"--device must be auto, cpu or cuda, got {self.device!r}")
        check_float("--ddp-timeout (minutes)", self.ddp_timeout, above=0.0, maximum=1e6)


def _flag(name: str) -> str:
    """The command-line flag of a settings field: ``train_len`` -> ``--train-len``."""
    return f"--{name.replace('_', '-')}"


def build_tasks(settings: LabSettings) -> dict:
    """The task objects (reads the corpus for lm) with their lengths checked."""
    from .tasks import CopyTask, RecallTask, TextTask

    tasks = {}
    for name in settings.tasks:
        if name == "copy":
            task = CopyTask(settings.symbols)
        elif name == "recall":
            task = RecallTask(settings.symbols)
        else:
            task = TextTask(None if settings.text is None else list(settings.text), retrieval_mix=settings.retrieval_mix)
        task.check_lengths(settings.train_len, settings.eval_lens)
        tasks[name] = task
    return tasks


def default_schemes() -> tuple[str, ...]:
    return available_contenders()


def from_preset(preset: str, **overrides) -> LabSettings:
    if preset not in SETTINGS_PRESETS:
        raise ValueError(f"unknown preset {preset!r}; known presets: {', '.join(SETTINGS_PRESETS)}")
    values = dict(SETTINGS_PRESETS[preset])
    values.update({k: v for k, v in overrides.items() if v is not None})
    values.setdefault("schemes", default_schemes())
    values.setdefault("out", "lab-out")
    return LabSettings(**values)


def with_changes(settings: LabSettings, **changes) -> LabSettings:
    return replace(settings, **changes)
