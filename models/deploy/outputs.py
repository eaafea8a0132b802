"""Which output of a model is the main logits: PIDNet(augment=True) returns ``[p, main, boundary]``."""
import torch.nn as nn

from utils.errors import ModelError


def select_output(outputs, output_index=1):
    """The main logits of a model output: a tensor as is, a list/tuple indexed by ``output_index``."""
    if isinstance(outputs, (list, tuple)):
        if not -len(outputs) <= output_index < len(outputs):
            raise ModelError(f"output_index {output_index} is out of range: the model returns "
                             f"{len(outputs)} outputs; use 1 for PIDNet's main logits")
        return outputs[output_index]
    return outputs


class MainOutput(nn.Module):
    """Wrap a model so that it returns only the main logits (for export and compilation)."""

    def __init__(self, model, output_index=1):
        super().__init__()
        self.model = model
        self.output_index = output_index

    def forward(self, x):
        return select_output(self.model(x), self.output_index)
