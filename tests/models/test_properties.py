"""Property tests: PIDNet at random input sizes gives the documented output size, finite values."""
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models.pidnet import PIDNet

_MODELS = {}


def _model(structure, augment):
    key = (structure, augment)
    if key not in _MODELS:
        torch.manual_seed(0)
        m, n = (2, 3) if structure == "sm" else (3, 4)
        _MODELS[key] = PIDNet(m=m, n=n, num_classes=3, planes=8, ppm_planes=8, head_planes=8,
                              augment=augment).eval()
    return _MODELS[key]


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(height=st.integers(16, 160), width=st.integers(16, 160), batch=st.integers(1, 2),
       structure=st.sampled_from(["sm", "l"]), augment=st.booleans())
def test_output_size_is_ceil_one_eighth_and_finite(height, width, batch, structure, augment):
    model = _model(structure, augment)
    with torch.no_grad():
        out = model(torch.randn(batch, 3, height, width))
    outputs = out if augment else [out]
    expected = (-(-height // 8), -(-width // 8))
    for tensor, channels in zip(outputs, [3, 3, 1] if augment else [3]):
        assert tensor.shape == (batch, channels, *expected)
        assert torch.isfinite(tensor).all()
