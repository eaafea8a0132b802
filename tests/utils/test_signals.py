import os
import signal

import pytest

from utils.signals import StopRequest


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_stop_request_turns_a_signal_into_a_flag(sig, code):
    before = signal.getsignal(sig)
    with StopRequest(duplicate_window_s=60) as stop:
        assert not stop.requested and stop.exit_code == 0
        os.kill(os.getpid(), sig)
        assert stop.requested and stop.exit_code == code
        os.kill(os.getpid(), signal.SIGTERM)  # a duplicate (torchrun forwards signals): ignored
        assert stop.exit_code == code
        stop.duplicate_window_s = 0.0
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), sig)  # a later signal aborts
    assert signal.getsignal(sig) is before
