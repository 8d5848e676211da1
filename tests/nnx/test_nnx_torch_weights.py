"""ropelab.nnx.load_torch_state_dict: torch weights into NNX modules, transposed, checked
before anything is written.

Shapes: a torch Linear.weight is (out, in); an NNX Linear.kernel is (in, out).
"""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")  # before jax is first imported

import numpy as np  # noqa: E402
import pytest  # noqa: E402

pytest.importorskip("flax")

from flax import nnx  # noqa: E402

from ropelab.nnx import Attention, RopeMHA, load_torch_state_dict  # noqa: E402


def _sd(bias=False, d_model=16, seed=0):
    """Torch-layout weights ``(out, in)`` (and biases) of a 2-head attention of width 16."""
    rng = np.random.default_rng(seed)
    sd = {}
    for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
        sd[f"{name}.weight"] = rng.normal(size=(d_model, d_model)).astype(np.float32)
        if bias:
            sd[f"{name}.bias"] = rng.normal(size=(d_model,)).astype(np.float32)
    return sd


def test_loads_every_projection_transposed():
    sd = _sd(bias=True)
    module = load_torch_state_dict(Attention(16, 2, bias=True, rngs=nnx.Rngs(0)), sd)
    for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
        layer = getattr(module, name)
        np.testing.assert_array_equal(np.asarray(layer.kernel[...]), sd[f"{name}.weight"].T)
        np.testing.assert_array_equal(np.asarray(layer.bias[...]), sd[f"{name}.bias"])


def test_loads_ropemhas_out_proj():
    sd = _sd(bias=True)
    sd = {key.replace("o_proj", "out_proj"): value for key, value in sd.items()}
    module = load_torch_state_dict(RopeMHA(16, 2, rngs=nnx.Rngs(0)), sd)
    np.testing.assert_array_equal(np.asarray(module.out_proj.kernel[...]), sd["out_proj.weight"].T)


def test_load_torch_state_dict_transposes_weights():
    torch = pytest.importorskip("torch")
    lin = torch.nn.Linear(16, 8)
    module = Attention(16, 2, head_dim=4, bias=True, rngs=nnx.Rngs(0))
    sd = {f"{n}.{p}": getattr(torch.nn.Linear(16, 8) if n != "o_proj" else torch.nn.Linear(8, 16), p).detach()
          for n in ("q_proj", "k_proj", "v_proj", "o_proj") for p in ("weight", "bias")}
    sd["q_proj.weight"], sd["q_proj.bias"] = lin.weight.detach(), lin.bias.detach()
    load_torch_state_dict(module, sd)
    x = np.random.default_rng(0).normal(size=(3, 16)).astype(np.float32)
    with torch.no_grad():
        want = lin(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(np.asarray(module.q_proj(x)), want, rtol=1e-5, atol=1e-6)


def test_error_load_missing_key():
    sd = _sd()
    del sd["v_proj.weight"]
    with pytest.raises(ValueError, match=r"missing keys \['v_proj.weight'\]"):
        load_torch_state_dict(Attention(16, 2, rngs=nnx.Rngs(0)), sd)


def test_error_load_missing_bias():
    with pytest.raises(ValueError, match="missing keys.*q_proj.bias"):
        load_torch_state_dict(Attention(16, 2, bias=True, rngs=nnx.Rngs(0)), _sd(bias=False))


def test_error_load_unexpected_key_and_strict_false():
    sd = _sd()
    sd["rotary.freqs"] = np.zeros(4, np.float32)
    module = Attention(16, 2, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"unexpected keys \['rotary.freqs'\]"):
        load_torch_state_dict(module, sd)
    load_torch_state_dict(module, sd, strict=False)
    np.testing.assert_array_equal(np.asarray(module.k_proj.kernel[...]), sd["k_proj.weight"].T)


def test_error_load_shape_mismatch_changes_nothing():
    module = Attention(16, 2, rngs=nnx.Rngs(0))
    before = np.asarray(module.q_proj.kernel[...]).copy()
    sd = _sd()
    sd["o_proj.weight"] = np.zeros((16, 8), np.float32)
    with pytest.raises(ValueError, match=r"o_proj.weight has shape \(16, 8\), expected \(16, 16\)"):
        load_torch_state_dict(module, sd)
    np.testing.assert_array_equal(np.asarray(module.q_proj.kernel[...]), before)


def test_error_load_not_a_mapping():
    with pytest.raises(TypeError, match="state_dict must be a mapping"):
        load_torch_state_dict(Attention(16, 2, rngs=nnx.Rngs(0)), [1, 2])


def test_error_load_integer_weights():
    sd = _sd()
    sd["q_proj.weight"] = np.zeros((16, 16), np.int64)
    with pytest.raises(TypeError, match="q_proj.weight must be a floating-point array"):
        load_torch_state_dict(Attention(16, 2, rngs=nnx.Rngs(0)), sd)


def test_error_load_module_without_projections():
    with pytest.raises(TypeError, match="has none of the projections"):
        load_torch_state_dict(nnx.Linear(2, 2, rngs=nnx.Rngs(0)), _sd())


