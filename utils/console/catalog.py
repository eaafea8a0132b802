"""What the console offers, read from the modules that implement it.

Methods and their recommendations come from each compression module's ``METHODS`` /
``RECOMMENDATIONS`` tables, validated with its own ``check_recommendation``; runtimes from
``models.deploy.BACKENDS``; quantization from ``models.deploy.quantize`` when that module
exists. A method added to those tables appears in the page without a change here.
"""
import importlib
import importlib.util
import inspect
import logging

from models.compression import plan as plan_lib
from utils.errors import PIDNetError

logger = logging.getLogger(__name__)

# Modules that may define compression methods (the decomposition one is optional).
COMPRESSION_MODULES = ("models.compression.pruner", "models.compression.decompose")
BUDGETS = ("target_macs", "target_latency")
FAMILIES = {"models.compression.pruner": "pruning", "models.compression.decompose": "decomposition"}
QUANTIZE_MODULE = "models.deploy.quantize"


def _optional(name):
    try:
        if importlib.util.find_spec(name) is None:
            return None
    except ModuleNotFoundError:
        return None
    return importlib.import_module(name)


def _valid_recommendations(module, method):
    valid = []
    for name in getattr(module, "RECOMMENDATIONS", ()):
        try:
            module.check_recommendation(method, name)
        except PIDNetError:
            continue
        valid.append(name)
    return valid


def compression_methods():
    """``[{name, family, help, manual, recommendations, default_recommendation, module}]``."""
    rows, seen = [], set()
    for module_name in COMPRESSION_MODULES:
        module = _optional(module_name)
        if module is None:
            continue
        for method in getattr(module, "METHODS", ()):
            if method in seen:
                continue
            seen.add(method)
            recs = _valid_recommendations(module, method)
            rows.append({"name": method, "family": FAMILIES.get(module_name, ""),
                         "help": plan_lib.METHOD_HELP.get(method, ""), "manual": plan_lib.manual_keyword(method),
                         "module": module_name,
                         "recommendations": [{"name": r, "help": plan_lib.RECOMMENDATION_HELP.get(r, "")}
                                             for r in recs],
                         "default_recommendation": module.check_recommendation(method, None),
                         "preview": method in plan_lib.PREVIEW_METHODS,
                         "budgets": budgets(module)})
    return rows


def budgets(module):
    """The budget keywords (``target_macs``, ``target_latency``) the module's compress_model takes."""
    parameters = inspect.signature(module.compress_model).parameters
    return [name for name in BUDGETS if name in parameters]


def supported_kwargs(function, kwargs):
    """The subset of ``kwargs`` that ``function`` accepts (methods of different modules differ)."""
    parameters = inspect.signature(function).parameters
    return {k: v for k, v in kwargs.items() if k in parameters}


def method_module(method):
    """The compression module that implements ``method`` (for its planning and compress functions)."""
    for row in compression_methods():
        if row["name"] == method:
            return importlib.import_module(row["module"]), row
    valid = ", ".join(r["name"] for r in compression_methods())
    from utils.errors import CompressionError

    raise CompressionError(f"unknown compression method '{method}': use one of {valid}")


def runtimes():
    from models.deploy import BACKENDS

    return list(BACKENDS)


def quantization():
    """The quantization module's options, or None while the toolkit has none."""
    module = _optional(QUANTIZE_MODULE)
    if module is None:
        return None
    return {name.lower(): list(getattr(module, name)) for name in dir(module)
            if name.isupper() and isinstance(getattr(module, name), (tuple, list))}


def catalog():
    return {"methods": compression_methods(), "runtimes": runtimes(), "quantization": quantization()}
