"""The local compression console: NetsPresso's web GUI, offline, in your browser.

    pip install -r requirements-console.txt
    python tools/console.py --workdir output/console            # http://127.0.0.1:7860
    python tools/console.py --workdir export/ --port 8000
    python tools/console.py --host 0.0.0.0 --allow-pickle-uploads   # reachable from the network (warned)

Pick a model from the work directory (an exported ``model_modelfx.pt`` + ``model_headfx.pt``,
a compressed model, or a checkpoint + config), see its layers (MACs, L2 / GM / NN importance,
VBMF ranks), preview a method and ratio, compress in the background and download the result
with the ``tools/compress.py`` command line that reproduces it; quantize it (``tools/quantize.py``)
and evaluate fp32 vs compressed vs int8 on a config's val set (``tools/eval.py``'s functions)
with an accuracy-vs-latency chart. Only files inside ``--workdir`` are read or written.
"""
import argparse
import errno
import logging
import os
import socket
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from utils.cli import run_main, setup_logging  # noqa: E402
from utils.errors import ConsoleError  # noqa: E402

logger = logging.getLogger("console")
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def get_args_parser():
    parser = argparse.ArgumentParser(description="Local web console for compressing PIDNet models")
    parser.add_argument("--workdir", default="output/console",
                        help="the only folder the console reads models from and writes results to")
    parser.add_argument("--port", type=int, default=7860, help="TCP port (default 7860)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind; anything but 127.0.0.1 exposes the console to the network")
    parser.add_argument("--allow-pickle-uploads", action="store_true",
                        help="accept uploads of whole-module files (pickles run code when loaded)")
    parser.add_argument("--max-upload-mb", type=float, default=512, help="largest accepted upload (MB)")
    return parser


def check_port(host, port):
    """Fail with one line when ``host:port`` cannot be bound (in use, or not an address here)."""
    if not 0 < port < 65536:
        raise ConsoleError(f"--port {port} is not a TCP port: use 1..65535")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ConsoleError(f"port {port} on {host} is already in use: stop the other server "
                                   f"or pass --port N (e.g. --port {port + 1})") from None
            raise ConsoleError(f"cannot listen on {host}:{port} ({exc.strerror}): "
                               "pass --host 127.0.0.1 or another address of this machine") from None


def main(args):
    setup_logging()
    try:
        import uvicorn

        from utils.console.app import create_app
    except ImportError as exc:
        raise ConsoleError(f"the console needs {exc.name}: pip install -r requirements-console.txt") from None
    check_port(args.host, args.port)
    if args.host not in LOCAL_HOSTS:
        logger.warning("listening on %s: anyone who can reach this machine can use the console and read "
                       "the files in %s", args.host, os.path.abspath(args.workdir))
    if args.allow_pickle_uploads:
        logger.warning("--allow-pickle-uploads: uploaded model files run code when loaded; accept only yours")
    app = create_app(args.workdir, args.allow_pickle_uploads, args.max_upload_mb)
    host = f"[{args.host}]" if ":" in args.host else args.host
    print(f"PIDNet compression console: http://{host}:{args.port}/  (work directory "
          f"{app.state.console.workspace.root}; Ctrl-C stops it)", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main, get_args_parser().parse_args()))
