"""The console's work directory: the only place it reads models from and writes results to.

Names coming from the page are resolved with :meth:`Workspace.path`, which refuses absolute
paths, ``..`` and symlinks leading outside the directory. Uploads are streamed to a hidden
temporary file with a size limit, checked (a model file, a weights file, a config, or an image
that decodes) and only then renamed into ``uploads/`` (images into ``uploads/images/``).
Whole-module files are pickles that run code when loaded, so their upload is refused unless the
console was started with ``--allow-pickle-uploads``.
Results are written into a hidden folder renamed to ``runs/<name>`` when complete, so a failed
or cancelled job leaves the work directory as it was.
"""
import contextlib
import logging
import os
import pickletools
import re
import shutil
import tempfile
import zipfile

from utils.errors import ConsoleError
from utils.layout import COMPRESSED_BODY, LEGACY_COMPRESSED_BODIES, QUANTIZE_REPORT, compression_report  # noqa: F401

logger = logging.getLogger(__name__)

MODEL_EXTENSIONS = (".pt", ".pth", ".pth.tar", ".tar", ".pkl")
CONFIG_EXTENSIONS = (".yaml", ".yml")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp")
UPLOADS = "uploads"
IMAGE_UPLOADS = "uploads/images"  # one folder: the image picker offers it to PR_NN and calibration
RUNS = "runs"
# A compress run folder holds what tools/compress.py writes: its body and the JSON report beside it.
RUN_BODY = COMPRESSED_BODY
RUN_REPORT = os.path.basename(compression_report(RUN_BODY))


def run_body(workspace, run):
    """The compressed body of the run folder ``run`` (relative name); runs of earlier versions
    (``compressed.pt``) are still read."""
    for name in (RUN_BODY,) + LEGACY_COMPRESSED_BODIES:
        if os.path.isfile(workspace.path(f"{run}/{name}", must_exist=False)):
            return f"{run}/{name}"
    raise ConsoleError(f"'{run}' holds no compressed model ({RUN_BODY}): pick a run the console's compress wrote")


def run_report(workspace, run):
    """The compression report (relative name) of the run folder ``run``."""
    return os.path.splitext(run_body(workspace, run))[0] + ".json"
DEFAULT_MAX_UPLOAD_MB = 512
_CHUNK = 1 << 20
# Globals a state dict / training checkpoint pickles; anything else is an object that runs code.
_WEIGHT_GLOBALS = {"collections.OrderedDict", "torch.Size", "torch.device", "builtins.set", "builtins.slice",
                   "_codecs.encode", "numpy.core.multiarray._reconstruct", "numpy._core.multiarray._reconstruct",
                   "numpy.ndarray", "numpy.dtype", "numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar"}
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def pickle_globals(data):
    """``module.name`` of every global a pickle would import (read with pickletools: nothing runs)."""
    names, strings = set(), []
    for opcode, arg, _ in pickletools.genops(data):
        if opcode.name == "GLOBAL":
            names.add(arg.replace(" ", "."))
        elif opcode.name == "STACK_GLOBAL" and len(strings) >= 2:
            names.add(f"{strings[-2]}.{strings[-1]}")
        elif isinstance(arg, str):
            strings.append(arg)
    return names


def _is_weight_global(name):
    return (name in _WEIGHT_GLOBALS or name.startswith("torch._utils._rebuild")
            or (name.startswith("torch.") and name.endswith("Storage")) or name.startswith("torch.serialization."))


def file_kind(path):
    """``config``, ``weights`` (state dict / checkpoint), ``module`` (whole pickled module) or ``other``.

    Torch files are zip archives whose ``data.pkl`` names the classes to import; a module file
    names ``torch.fx``/``torch.nn``/``models.`` classes, a weights file only tensor rebuilders.
    """
    lower = path.lower()
    if lower.endswith(CONFIG_EXTENSIONS):
        return "config"
    if not zipfile.is_zipfile(path):
        return "other"
    try:
        with zipfile.ZipFile(path) as archive:
            pkl = [n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
            if not pkl:
                return "other"
            names = pickle_globals(archive.read(pkl[0]))
    except Exception:  # a corrupt archive or pickle stream: not a model file either way
        return "other"
    return "weights" if all(_is_weight_global(n) for n in names) else "module"


def _check_image(path, filename):
    """Refuse an "image" that does not decode (decoded as tools/compress.py --images reads it)."""
    from utils.images import read_image

    if read_image(path) is None:
        raise ConsoleError(f"upload '{filename}' is not an image (it does not decode as "
                           f"{os.path.splitext(filename)[1] or 'an image'}): upload a .png, .jpg or .bmp image")


class Workspace:
    """Paths, listings, uploads and result folders inside ``root``.

    Args:
        root: the work directory (created if missing).
        allow_pickle_uploads: accept uploads of whole-module (pickle) files.
        max_upload_mb: uploads above this size are refused.
    """

    def __init__(self, root, allow_pickle_uploads=False, max_upload_mb=DEFAULT_MAX_UPLOAD_MB):
        self.root = os.path.realpath(os.path.abspath(os.fspath(root)))
        os.makedirs(self.root, exist_ok=True)
        self.allow_pickle_uploads = bool(allow_pickle_uploads)
        self.max_upload_bytes = int(max_upload_mb * (1 << 20))

    # ------------------------------------------------------------------ paths
    def path(self, name, must_exist=True):
        """The absolute path of ``name`` (relative to the work directory), refusing escapes."""
        name = os.fspath(name or "")
        if not name or os.path.isabs(name) or "\x00" in name:
            raise ConsoleError(f"'{name}' is not a file name inside the work directory {self.root}: "
                               "pick a file from the list")
        full = os.path.realpath(os.path.join(self.root, name))
        if os.path.commonpath([full, self.root]) != self.root or full == self.root:
            raise ConsoleError(f"'{name}' is outside the work directory {self.root}: "
                               "copy the file into the work directory first")
        if must_exist and not os.path.isfile(full):
            raise ConsoleError(f"'{name}' does not exist in the work directory {self.root}: pick a file from the list")
        return full

    def folder(self, name):
        """The absolute path of folder ``name`` inside the work directory (same refusals as :meth:`path`)."""
        full = self.path(name, must_exist=False)
        if not os.path.isdir(full):
            raise ConsoleError(f"'{name}' is not a folder in the work directory {self.root}: pick one from the list")
        return full

    def relative(self, path):
        return os.path.relpath(os.path.realpath(path), self.root).replace(os.sep, "/")

    def listing(self):
        """``{"models", "configs", "image_folders", "dataset_roots", "quantize_reports"}`` of the work
        directory (a dataset root is a folder with a ``list/`` folder, as tools/make_synthetic.py writes)."""
        models, configs, folders, roots, reports = [], [], [], [], []
        for folder, dirs, files in os.walk(self.root):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            if "list" in dirs and folder != self.root:
                roots.append({"name": self.relative(folder)})
            images = [n for n in files if n.lower().endswith(IMAGE_EXTENSIONS) and not n.startswith(".")]
            if images and folder != self.root:
                folders.append({"name": self.relative(folder), "images": len(images)})
            for name in sorted(files):
                if name.startswith("."):
                    continue
                full = os.path.join(folder, name)
                lower = name.lower()
                if name == QUANTIZE_REPORT:
                    reports.append({"name": self.relative(full)})
                elif lower.endswith(CONFIG_EXTENSIONS):
                    configs.append({"name": self.relative(full)})
                elif lower.endswith(MODEL_EXTENSIONS):
                    models.append({"name": self.relative(full), "kind": file_kind(full),
                                   "size": os.path.getsize(full)})
        return {"root": self.root, "models": models, "configs": configs, "image_folders": folders,
                "dataset_roots": roots, "quantize_reports": reports}

    # ------------------------------------------------------------------ uploads
    def _upload_name(self, filename):
        base = os.path.basename(str(filename or "").replace("\\", "/"))
        base = _SAFE_NAME.sub("_", base).lstrip(".")
        accepted = MODEL_EXTENSIONS + CONFIG_EXTENSIONS + IMAGE_EXTENSIONS
        if not base or not base.lower().endswith(accepted):
            raise ConsoleError(f"upload '{filename}' is not a model, weights, config or image file: use "
                               f"{', '.join(accepted)}")
        folder = os.path.join(self.root, IMAGE_UPLOADS if base.lower().endswith(IMAGE_EXTENSIONS) else UPLOADS)
        target = os.path.join(folder, base)
        stem, ext = os.path.splitext(base)
        count = 1
        while os.path.exists(target):
            target = os.path.join(folder, f"{stem}_{count}{ext}")
            count += 1
        return target

    def save_upload(self, filename, stream, check=None):
        """Stream ``stream`` (a binary file object) into ``uploads/``; returns the relative name.

        ``check(path, kind)`` may validate the content further (e.g. load a config) and raise a
        :class:`PIDNetError`; nothing is kept when any check fails.
        """
        target = self._upload_name(filename)
        made = [d for d in (os.path.join(self.root, UPLOADS), os.path.dirname(target)) if not os.path.isdir(d)]
        os.makedirs(os.path.dirname(target), exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".upload.", suffix=os.path.splitext(target)[1],
                                   dir=os.path.dirname(target))
        try:
            size = 0
            with os.fdopen(fd, "wb") as handle:
                while True:
                    chunk = stream.read(_CHUNK)
                    if not chunk:
                        break
                    size += len(chunk)
                    if size > self.max_upload_bytes:
                        raise ConsoleError(f"upload '{filename}' is larger than the limit of "
                                           f"{self.max_upload_bytes >> 20} MB: copy it into the work directory "
                                           "instead, or restart the console with a larger --max-upload-mb")
                    handle.write(chunk)
            kind = "image" if target.lower().endswith(IMAGE_EXTENSIONS) else file_kind(tmp)
            if kind == "image":
                _check_image(tmp, filename)
            elif kind == "other":
                raise ConsoleError(f"upload '{filename}' is not a model file (neither a PyTorch file nor a config)")
            if kind == "module" and not self.allow_pickle_uploads:
                raise ConsoleError(f"upload '{filename}' is a whole pickled module, which runs code when loaded: "
                                   "refused. Copy it into the work directory yourself if you trust it, or "
                                   "restart the console with --allow-pickle-uploads")
            if kind == "module":
                logger.warning("accepted the pickle upload %s (--allow-pickle-uploads): loading it runs its code",
                               filename)
            if check is not None:
                check(tmp, kind)
            os.replace(tmp, target)
        except BaseException:
            if os.path.exists(tmp):
                os.remove(tmp)
            for folder in reversed(made):
                if os.path.isdir(folder) and not os.listdir(folder):
                    os.rmdir(folder)
            raise
        return self.relative(target)

    # ------------------------------------------------------------------ results
    @contextlib.contextmanager
    def run_dir(self, label):
        """A hidden folder that becomes ``runs/<label>[_N]`` when the block succeeds, else disappears.

        Yields ``(temporary_path, final_path)``: files name their final location (e.g. in a
        command line) while being written to the temporary one.
        """
        with self.output_dir(os.path.join(self.root, RUNS), label) as paths:
            yield paths

    @contextlib.contextmanager
    def output_dir(self, parent, label):
        """:meth:`run_dir` for any folder ``parent`` of the work directory: ``parent/<label>[_N]``
        appears only when the block succeeds; a ``parent`` this call created goes again otherwise."""
        parent = os.path.realpath(parent)
        if os.path.commonpath([parent, self.root]) != self.root:
            raise ConsoleError(f"{parent} is outside the work directory {self.root}")
        created = not os.path.isdir(parent)
        os.makedirs(parent, exist_ok=True)
        label = _SAFE_NAME.sub("_", label).strip("._") or "run"
        final, count = os.path.join(parent, label), 1
        while os.path.exists(final):
            final = os.path.join(parent, f"{label}_{count}")
            count += 1
        tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(final)}.", dir=parent)
        try:
            yield tmp, final
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            if created and not os.listdir(parent):
                os.rmdir(parent)
            raise
