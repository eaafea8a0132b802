"""ONNX export of a model's main logits (dynamic batch / height / width, atomic write)."""
import logging
import os
import warnings

import torch

from models.deploy.outputs import MainOutput

logger = logging.getLogger(__name__)


def export_onnx(model, path, example_input, output_index=1, dynamic=True, opset=17):
    """Export ``model``'s main logits to ONNX at ``path`` (atomic: temp file + rename).

    With ``dynamic`` the batch, height and width axes are symbolic, so one file serves every
    input size. The TorchScript-based exporter is used because it is an order of magnitude
    faster to run than the dynamo exporter on PIDNet; the dynamo exporter is the fallback.
    """
    wrapper = MainOutput(model, output_index).eval().cpu()
    example = example_input.detach().cpu().contiguous()
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"  # same folder, so the final os.replace is atomic
    axes = {"images": {0: "batch", 2: "height", 3: "width"},
            "logits": {0: "batch", 2: "out_height", 3: "out_width"}} if dynamic else None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                torch.onnx.export(wrapper, (example,), tmp, dynamo=False, input_names=["images"],
                                  output_names=["logits"], dynamic_axes=axes, opset_version=opset,
                                  do_constant_folding=True)
            except (TypeError, RuntimeError, AttributeError, NotImplementedError) as exc:
                logger.info("TorchScript ONNX export failed (%s); trying the dynamo exporter", exc)
                shapes = None
                if dynamic:
                    dim = torch.export.Dim.AUTO
                    shapes = ({0: dim, 2: dim, 3: dim},)
                torch.onnx.export(wrapper, (example,), tmp, dynamo=True, input_names=["images"],
                                  output_names=["logits"], dynamic_shapes=shapes, external_data=False)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path
