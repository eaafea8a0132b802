"""Offline structured pruning for exported PIDNet models (NetsPresso-compatible).

``compress_model`` prunes an ``nn.Module`` (usually the fx body ``model_modelfx.pt``) with
``PR_L2``/``PR_GM``/``PR_ID`` and a ``slamp`` or ``manual`` recommendation, grouping coupled
channels with torch-pruning; :mod:`models.compression.cloud` sends the same request to the
NetsPresso service instead.
"""
from models.compression.pruner import METHODS, RECOMMENDATIONS, compress_model  # noqa: F401
