import math

import pytest
import torch

from utils.faults import FaultInjector, fault_hooks_from_env


def test_fault_injector_spec():
    assert FaultInjector.from_env({}).kind is None
    fault = FaultInjector.from_env({"PIDNET_TEST_FAULT": "nan:2:3"})
    loss = torch.tensor(1.0)
    assert fault(2, 2, loss) is loss
    assert math.isnan(fault(2, 3, loss).item())
    with pytest.raises(ValueError, match="PIDNET_TEST_FAULT"):
        FaultInjector.from_env({"PIDNET_TEST_FAULT": "explode:1"})


def test_no_hook_unless_the_variable_is_set():
    assert fault_hooks_from_env({}) == []
    (hook,) = fault_hooks_from_env({"PIDNET_TEST_FAULT": "sigterm:1:0:1"})
    assert (hook.kind, hook.epoch, hook.iteration, hook.rank) == ("sigterm", 1, 0, 1)
    loss = torch.tensor(2.0)
    assert hook(1, 0, loss) is loss  # rank 1 only: this process is rank 0, nothing is sent
