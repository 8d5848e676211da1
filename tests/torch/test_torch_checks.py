"""ropelab.torch.checks: the front end's one check of an integer tensor."""

import pytest

torch = pytest.importorskip("torch")

from ropelab.torch.checks import check_integer_tensor  # noqa: E402


@pytest.mark.parametrize("dtype", [torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8])
def test_integer_tensors_pass_through(dtype):
    t = torch.zeros(2, 3, dtype=dtype)
    assert check_integer_tensor("positions", t) is t


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64, torch.bool, torch.complex64])
def test_other_dtypes_are_refused_by_name(dtype):
    with pytest.raises(TypeError, match=f"positions must be an integer tensor, got dtype {dtype}"):
        check_integer_tensor("positions", torch.zeros(3, dtype=dtype))


def test_a_non_tensor_is_refused_saying_what_was_expected():
    with pytest.raises(TypeError, match="tokens must be a torch tensor, got list"):
        check_integer_tensor("tokens", [[1, 2]])
    with pytest.raises(TypeError, match=r"tokens must be a torch tensor shaped \(B, T\), got int"):
        check_integer_tensor("tokens", 3, expected="a torch tensor shaped (B, T)")
