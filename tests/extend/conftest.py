"""tests/extend: skipped as a whole without torch, transformers, safetensors, tqdm.

``tiny_checkpoint``: a byte-level model trained briefly at 16 tokens on Python sources,
saved with ropelab.hf.save_pretrained and the byte tokenizer (seconds of CPU). ``held_out``:
text files it never saw.
"""

import os
import sysconfig

import pytest
from ropelab_testing import skip_folder_without

collect_ignore_glob = skip_folder_without("extend", "torch", "transformers", "safetensors", "tqdm")

TRAIN_LEN = 16
STDLIB = sysconfig.get_paths()["stdlib"]
TRAIN_FILES = ("argparse.py", "textwrap.py", "string.py")
HELD_OUT_FILES = ("shlex.py", "fnmatch.py", "glob.py", "copy.py")


def _train(folder):
    import torch
    import torch.nn.functional as F

    from ropelab import RopeConfig
    from ropelab.hf import byte_tokenizer, save_pretrained
    from ropelab.torch import Transformer, TransformerConfig

    torch.manual_seed(0)
    data = b"\n".join(open(os.path.join(STDLIB, name), "rb").read() for name in TRAIN_FILES)
    data = torch.frombuffer(bytearray(data), dtype=torch.uint8).long()
    # head dim 16: 8 rotary pairs for the LongRoPE search
    model = Transformer(TransformerConfig(257, d_model=32, num_heads=2, layers=("rope", "rope"),
                                          rope=RopeConfig(16, layout="half")))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(250):
        starts = torch.randint(0, len(data) - TRAIN_LEN, (32,), generator=g)
        windows = torch.stack([data[s : s + TRAIN_LEN] for s in starts.tolist()])  # (B, T)
        inputs = torch.cat([torch.full((32, 1), 256), windows[:, :-1]], dim=1)
        loss = F.cross_entropy(model(inputs).flatten(0, 1), windows.flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
    save_pretrained(model.eval(), folder, max_position_embeddings=TRAIN_LEN, bos_token_id=256, tokenizer=byte_tokenizer())
    return folder


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _train(str(tmp_path_factory.mktemp("tiny") / "ckpt"))
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def held_out(tmp_path_factory):
    """One file of about 40 KB of sources the model never saw."""
    path = tmp_path_factory.mktemp("text") / "held_out.py"
    text = "\n".join(open(os.path.join(STDLIB, name), encoding="utf-8").read() for name in HELD_OUT_FILES)
    path.write_text(text[:40000], encoding="utf-8")
    return str(path)
