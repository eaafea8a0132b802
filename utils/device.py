"""Device selection: automatic by default, ``--device`` to override."""
import torch

from utils.errors import DeviceError


def resolve_device(name=None):
    """Return a ``torch.device``: ``None``/``'auto'`` picks CUDA when available, else CPU.

    Raises:
        DeviceError: ``cuda`` was asked for on a machine without a usable CUDA device.
    """
    if name in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise DeviceError(f"unknown device '{name}': use auto, cpu, cuda or cuda:N") from exc
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"--device {name} was requested but CUDA is not available here: "
                              "use --device cpu (or auto)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise DeviceError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) "
                              "are visible; pick a valid index")
    elif device.type != "cpu":
        raise DeviceError(f"unsupported device '{name}': use auto, cpu, cuda or cuda:N")
    return device
