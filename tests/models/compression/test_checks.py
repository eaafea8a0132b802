"""The request checks pruning and decomposition share (models/compression/checks.py)."""
import pytest

from models.compression import checks, decompose, pruner
from utils.errors import CompressionError


@pytest.mark.parametrize("family, method, default", [(pruner, "PR_L2", "slamp"), (pruner, "PR_ID", "manual"),
                                                     (decompose, "FD_TK", "vbmf"), (decompose, "FD_CP", "manual")])
def test_each_family_defaults_and_normalises(family, method, default):
    assert family.check_method(f" {method.lower()} ") == method
    assert family.check_recommendation(method, None) == default
    assert family.check_recommendation(method, "") == default
    assert family.check_recommendation(method, " MANUAL ") == "manual"


@pytest.mark.parametrize("family, method, name, match", [
    (pruner, "PR_L2", "vbmf", "vbmf recommends decomposition ranks"),
    (pruner, "PR_ID", "slamp", "PR_ID removes the channel indices you list"),
    (pruner, "PR_L2", "lamp", r"unknown recommendation 'lamp' for PR_L2: use one of slamp, manual"),
    (decompose, "FD_TK", "slamp", "slamp recommends pruning amounts"),
    (decompose, "FD_CP", "vbmf", "vbmf does not recommend CP ranks"),
    (decompose, "FD_SVD", "x", r"unknown recommendation 'x' for FD_SVD: use one of vbmf, manual"),
])
def test_refusals_name_the_fix(family, method, name, match):
    with pytest.raises(CompressionError, match=match):
        family.check_recommendation(method, name)


def test_unknown_method_names_the_family():
    with pytest.raises(CompressionError, match="unknown compression method 'FD_TK': use one of PR_L2"):
        pruner.check_method("FD_TK")
    with pytest.raises(CompressionError, match="unknown decomposition method 'PR_L2': use one of FD_TK"):
        decompose.check_method("PR_L2")


@pytest.mark.parametrize("value", [0.0, 1.0, float("nan"), "half", None])
def test_check_budget_refuses_outside_the_open_interval(value):
    with pytest.raises(CompressionError, match="--target-macs must be"):
        checks.check_budget(value, "--target-macs")
    assert checks.check_budget("0.25", "--target-macs") == 0.25
