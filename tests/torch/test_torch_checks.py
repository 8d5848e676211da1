"""ropelab.torch.checks: the front end's one check of an integer tensor."""

import pytest

torch = pytest.importorskip("torch")

from ropelab.torch.checks import check_integer_tensor, check_padding_mask  # noqa: E402


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


@pytest.mark.parametrize("dtype", [torch.uint16, torch.uint32, torch.uint64])
def test_unsigned_dtypes_torch_cannot_compute_with_are_refused(dtype):
    with pytest.raises(TypeError, match=f"positions must be int8, .* got dtype {dtype}.*convert it with .long"):
        check_integer_tensor("positions", torch.zeros(3, dtype=dtype))


@pytest.mark.parametrize("dtype", [torch.uint16, torch.uint32])
def test_unsigned_positions_are_refused_by_every_front_door(dtype):
    from ropelab import RopeConfig, rope_tables
    from ropelab.torch import Attention, RotaryEmbedding

    positions = torch.tensor([1, 2, 3], dtype=dtype)
    q = torch.randn(1, 2, 3, 8)
    for call in (
        lambda: RotaryEmbedding(RopeConfig(8))(q, q, positions),
        lambda: Attention(16, 2, rope=RopeConfig(8))(torch.randn(1, 3, 16), positions),
        lambda: rope_tables(RopeConfig(8), positions),
    ):
        with pytest.raises(TypeError, match=f"got dtype {dtype}.*convert it with .long"):
            call()
    # the same values as int64 are fine
    RotaryEmbedding(RopeConfig(8))(q, q, positions.long())


@pytest.mark.parametrize("dtype", [torch.bool, torch.int8, torch.uint8, torch.int32, torch.int64])
def test_padding_masks_of_bool_and_integer_dtypes_pass(dtype):
    mask = torch.tensor([[0, 1, 1], [1, 1, 1]]).to(dtype)
    assert check_padding_mask(mask, (2, 3)) is mask
    assert check_padding_mask(mask) is mask  # any (B, S)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_floating_masks_are_refused_naming_the_convention(dtype):
    additive = torch.tensor([[-1e9, 0.0, 0.0]], dtype=dtype)
    with pytest.raises(TypeError, match="1 for tokens and 0 for padding.*additive masks .* not accepted"):
        check_padding_mask(additive, (1, 3))


def test_mask_values_other_than_0_and_1_are_refused_naming_the_slot():
    with pytest.raises(ValueError, match="1 for tokens and 0 for padding only, got 2 at row 1, slot 0"):
        check_padding_mask(torch.tensor([[1, 1], [2, 1]]), (2, 2))
    with pytest.raises(ValueError, match="got -1 at row 0, slot 1"):
        check_padding_mask(torch.tensor([[1, -1]]))
    # values are not read where that would cost a device sync (values=False)
    check_padding_mask(torch.tensor([[1, 2]]), values=False)


def test_mask_shapes_and_types_are_named():
    with pytest.raises(TypeError, match="attention_mask must be a torch tensor, got list"):
        check_padding_mask([[1, 1]], (1, 2))
    with pytest.raises(ValueError, match=r"mask must be shaped \(B, S\), got \(3,\)"):
        check_padding_mask(torch.ones(3, dtype=torch.long), name="mask")
    with pytest.raises(ValueError, match=r"attention_mask must be shaped \(B, S\) = \(2, 4\) \(cached 1 \+ new 3 keys\)"):
        check_padding_mask(torch.ones(2, 3, dtype=torch.long), (2, 4), covers="(cached 1 + new 3 keys)")
