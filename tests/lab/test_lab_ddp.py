"""DDP training (2 processes, gloo on CPU) takes the same steps as one process on the same global batch."""

import json
import os
import socket

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")

import torch.multiprocessing as mp  # noqa: E402

from ropelab.lab.tasks import CopyTask  # noqa: E402
from ropelab.lab.train import DistContext, leave_worker, setup_distributed, train  # noqa: E402

STEPS = 4
SETTINGS = dict(length=15, steps=STEPS, batch_size=6, lr=3e-3, seed=3, stream="train", checkpoint_every=2, progress=False)


def _model():
    from ropelab.torch.transformer import Transformer, TransformerConfig

    torch.manual_seed(0)
    # rope and nope layers; the copy task's ragged masks give the two ranks unequal token counts
    return Transformer(TransformerConfig(23, d_model=16, num_heads=2, layers=("rope", "nope")))


def _worker(rank, world, port, folder, result):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    ctx = setup_distributed("cpu")
    assert (ctx.rank, ctx.world) == (rank, world)
    model = _model()
    losses = train(model, CopyTask(20), folder=folder, ctx=ctx, **SETTINGS)
    if rank == 0:
        params = {k: v.tolist() for k, v in model.state_dict().items()}
        with open(result, "w") as f:
            json.dump({"losses": losses, "params": params}, f)
    # both ranks reach the end before either tears gloo down (else: abort at exit)
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()
    leave_worker()  # the lab's own exit: gloo's leftover threads can abort a normal one


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_match_one(tmp_path):
    torch.set_num_threads(1)
    single = _model()
    want = train(single, CopyTask(20), folder=str(tmp_path / "one"), ctx=DistContext(), **SETTINGS)
    result = str(tmp_path / "ddp.json")
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path / "two"), result), nprocs=2, join=True)
    got = json.load(open(result))
    assert len(got["losses"]) == STEPS
    assert max(abs(a - b) for a, b in zip(got["losses"], want, strict=True)) <= 1e-5
    moved = [not torch.equal(a, b) for a, b in zip(_model().state_dict().values(), single.state_dict().values(), strict=True)]
    assert all(moved)  # every weight took steps (so the comparison below means something)
    for name, value in single.state_dict().items():
        torch.testing.assert_close(torch.tensor(got["params"][name]), value, rtol=0, atol=1e-5)


def test_batch_must_divide_over_ranks(tmp_path):
    with pytest.raises(ValueError, match="--batch-size 5 is not divisible by the 2 processes"):
        train(_model(), CopyTask(20), folder=str(tmp_path), ctx=DistContext(0, 2), **{**SETTINGS, "batch_size": 5})


def test_torchrun_cli_matches_one_process(tmp_path):
    """`torchrun --nproc_per_node 2 -m ropelab lab` (DDP) gives one process's numbers."""
    import subprocess
    import sys

    args = ["lab", "--tasks", "copy", "--schemes", "rope", "--extensions", "yarn", "--steps", "5",
            "--d-model", "16", "--heads", "2", "--train-len", "12", "--eval-mults", "1", "2",
            "--batch-size", "4", "--eval-examples", "4", "--symbols", "20", "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = subprocess.run([sys.executable, "-m", "ropelab", *args, "--out", str(tmp_path / "one"), "--jobs", "1"],
                         env=env, capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr
    two = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port()),
         "-m", "ropelab", *args, "--out", str(tmp_path / "two")],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert two.returncode == 0, two.stderr
    assert "2 DDP processes" in two.stdout
    a = json.load(open(tmp_path / "one" / "results.json"))
    b = json.load(open(tmp_path / "two" / "results.json"))
    assert [(r["extension"], r["eval_len"], r["metric"]) for r in a] == [(r["extension"], r["eval_len"], r["metric"]) for r in b]
    for ra, rb in zip(a, b, strict=True):
        assert abs(ra["value"] - rb["value"]) <= 1e-5
    la = json.load(open(next((tmp_path / "one" / "runs").glob("copy-rope-*")) / "train.json"))["losses"]
    lb = json.load(open(next((tmp_path / "two" / "runs").glob("copy-rope-*")) / "train.json"))["losses"]
    assert max(abs(x - y) for x, y in zip(la, lb, strict=True)) <= 1e-5
