"""The parts of a compression request that pruning (:mod:`models.compression.pruner`) and
decomposition (:mod:`models.compression.decompose_ranks`) check alike: the method and
recommendation names (each family passes its own tables and messages) and a budget fraction."""
import math

from utils.errors import CompressionError


def check_method(method, methods, family):
    """``method`` in upper case when it is one of ``methods``; otherwise one line naming them.

    ``family`` is the kind of method the error names (``compression``, ``decomposition``).
    """
    name = str(method).strip().upper()
    if name not in methods:
        raise CompressionError(f"unknown {family} method '{method}': use one of {', '.join(methods)}")
    return name


def check_recommendation(method, recommendation, recommendations, default, refused=None):
    """``recommendation`` in lower case, or ``default`` when none is given.

    Args:
        method: the (checked) method, named in the error for an unknown recommendation.
        recommendations: the names this family knows.
        default: what an empty recommendation means for ``method``.
        refused: ``{name: message}`` for names refused with a hint of their own: another
            family's recommendation, or one of ours that does not fit ``method``.
    """
    if recommendation in (None, ""):
        return default
    name = str(recommendation).strip().lower()
    if refused and name in refused:
        raise CompressionError(refused[name])
    if name not in recommendations:
        raise CompressionError(f"unknown recommendation '{recommendation}' for {method}: use one of "
                               f"{', '.join(recommendations)}")
    return name


def check_budget(value, what):
    """A budget fraction in (0, 1), or a :class:`CompressionError` naming the flag."""
    try:
        fraction = float(value)
    except (TypeError, ValueError):
        raise CompressionError(f"{what} must be a number in (0, 1), got {value!r}") from None
    if math.isnan(fraction) or not 0.0 < fraction < 1.0:
        raise CompressionError(f"{what} must be in (0, 1) (the fraction of the original to keep), got {value}")
    return fraction
