"""diffusion_time: normalisation of a model's timestep argument, and the checks that cost no sync."""

import pytest
import torch

from dype_rope import diffusion_time


@pytest.mark.parametrize("value, kwargs, expected", [
    (0.25, {}, 0.25),
    (torch.tensor([0.75, 0.75]), {}, 0.75),
    (torch.tensor([750.0]), dict(divide_by=1000), 0.75),
    (250, dict(divide_by=1000), 0.25),
    (torch.tensor(0.2, dtype=torch.bfloat16), dict(reverse=True), 1 - 0.2001953125),  # bf16(0.2) = 0.2001953125
])
def test_normalises_to_one_is_noise(value, kwargs, expected):
    t = diffusion_time(value, **kwargs)
    assert t.dtype == torch.float64 and t.dim() == 0
    assert t.item() == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("value, divide_by, error, message", [
    (None, 1, ValueError, "without a timestep"),
    ("0.5", 1, TypeError, "tensor or a number"),
    (True, 1, TypeError, "tensor or a number"),
    (torch.tensor([]), 1, ValueError, "empty"),
    (1001, 1000, ValueError, "got 1.001"),
    (float("inf"), 1, ValueError, "got inf"),
    (torch.tensor([0.1, float("nan")]), 1, ValueError, "got nan"),
])
def test_bad_values_are_named(value, divide_by, error, message):
    with pytest.raises(error, match=message):
        diffusion_time(value, divide_by=divide_by)


def test_device_and_dtype_follow_the_request():
    t = diffusion_time(torch.tensor([0.5]), dtype=torch.float32)
    assert t.dtype == torch.float32 and t.item() == 0.5
