"""Send a compression request to the NetsPresso service (optional ``netspresso`` package).

The package is imported only here and only when ``--backend netspresso`` is used: it is not a
toolkit requirement (its own requirements pin an older torch, so install it in a separate
environment: ``pip install netspresso``). Credentials come only from the environment,
``NETSPRESSO_API_KEY`` or ``NETSPRESSO_EMAIL`` + ``NETSPRESSO_PASSWORD``; they are never
logged and are scrubbed from error messages.

The request mirrors NetsPresso's PIDNet tutorial::

    NetsPresso(api_key=...).compressor_v2().recommendation_compression(
        compression_method=CompressionMethod.PR_L2, recommendation_method=RecommendationMethod.SLAMP,
        recommendation_ratio=0.6, input_model_path="model_modelfx.pt", output_dir=...,
        input_shapes=[{"batch": 1, "channel": 3, "dimension": [1024, 2048]}])
"""
import glob
import importlib
import logging
import os

from utils.cli import first_line
from utils.errors import CompressionError

logger = logging.getLogger(__name__)

ENV_API_KEY = "NETSPRESSO_API_KEY"
ENV_EMAIL = "NETSPRESSO_EMAIL"
ENV_PASSWORD = "NETSPRESSO_PASSWORD"

_METHODS = ("PR_L2", "PR_GM", "PR_ID")
_RECOMMENDATIONS = {"slamp": "SLAMP"}


def credentials_from_env(environ=None):
    """``{'api_key': ...}`` or ``{'email': ..., 'password': ...}`` from the environment."""
    environ = os.environ if environ is None else environ
    if environ.get(ENV_API_KEY):
        return {"api_key": environ[ENV_API_KEY]}
    if environ.get(ENV_EMAIL) and environ.get(ENV_PASSWORD):
        return {"email": environ[ENV_EMAIL], "password": environ[ENV_PASSWORD]}
    raise CompressionError(f"--backend netspresso needs credentials in the environment: set {ENV_API_KEY} "
                           f"(or {ENV_EMAIL} and {ENV_PASSWORD}); they are never read from the command line")


def _import_netspresso():
    try:
        package = importlib.import_module("netspresso")
        enums = importlib.import_module("netspresso.enums")
    except ImportError as exc:
        raise CompressionError(f"--backend netspresso needs the optional 'netspresso' package ({exc}): install it "
                               "in a separate environment (pip install netspresso; it pins its own torch) "
                               "or use --backend offline") from None
    return package, enums


def _scrub(text, secrets):
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def _field(result, name):
    if isinstance(result, dict):
        return result.get(name)
    return getattr(result, name, None)


def compress_in_cloud(model_path, output_dir, method, recommendation, ratio, input_shapes, environ=None):
    """Run ``recommendation_compression`` on the service; return the compressed model's local path.

    Raises:
        CompressionError: missing package or credentials, an unsupported request, an unreachable
            service or a failed compression.
    """
    method = str(method).upper()
    if method not in _METHODS:
        raise CompressionError(f"unknown compression method '{method}': use one of {', '.join(_METHODS)}")
    if recommendation not in _RECOMMENDATIONS:
        raise CompressionError(f"--backend netspresso supports --recommendation {', '.join(_RECOMMENDATIONS)}; "
                               "for manual ratios or PR_ID indices use --backend offline "
                               "(or NetsPresso's web console)")
    if not os.path.isfile(model_path):
        raise CompressionError(f"model file not found: {model_path}. Export it with tools/export_netspresso.py")
    credentials = credentials_from_env(environ)
    package, enums = _import_netspresso()
    secrets = list(credentials.values())
    try:
        compression_method = getattr(enums.CompressionMethod, method)
        recommendation_method = getattr(enums.RecommendationMethod, _RECOMMENDATIONS[recommendation])
    except AttributeError as exc:
        raise CompressionError(f"the installed netspresso package lacks an enum member ({exc}): "
                               "upgrade it (pip install -U netspresso)") from None
    logger.info("sending %s + %s (ratio %s) for %s to NetsPresso", method, recommendation, ratio, model_path)
    try:
        client = package.NetsPresso(**credentials)
        compressor = client.compressor_v2()
        result = compressor.recommendation_compression(
            compression_method=compression_method,
            recommendation_method=recommendation_method,
            recommendation_ratio=float(ratio),
            input_model_path=os.fspath(model_path),
            output_dir=os.fspath(output_dir),
            input_shapes=input_shapes,
        )
    except CompressionError:
        raise
    except SystemExit:  # the package exits when it considers itself outdated
        raise CompressionError("the netspresso package refused to run (outdated version?): "
                               "upgrade it with pip install -U netspresso") from None
    except Exception as exc:  # network, authentication and service errors have many types
        detail = _scrub(first_line(exc), secrets)
        raise CompressionError(f"NetsPresso request failed ({type(exc).__name__}: {detail}): check network "
                               "access to the service, the credentials and your credit") from None
    status = str(_field(result, "status") or "").lower()
    if "error" in status or "stop" in status:
        raise CompressionError(f"NetsPresso compression ended with status '{status}': see the metadata in {output_dir}")
    path = _field(result, "compressed_model_path")
    if not path:
        found = sorted(glob.glob(os.path.join(os.fspath(output_dir), "**", "*.pt"), recursive=True))
        path = found[0] if found else None
    if not path or not os.path.isfile(path):
        raise CompressionError(f"NetsPresso reported no compressed model file in {output_dir}: "
                               "check the service's metadata.json there")
    return path
