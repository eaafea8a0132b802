"""Where every artifact lives and what it is called: the one home of output paths and file names.

A run of ``tools/train.py --cfg configs/<dataset>/<name>.yaml`` (the official layout)::

    OUTPUT_DIR/<dataset>/<name>/        RunLayout.run_dir
        checkpoint.pth.tar              .checkpoint   resumable training state
        best.pt, final_state.pt         .best, .final_state   official-format weights
        best_model_model.pt + _head.pt  .netspresso_pair('best')   the same with --netspresso
        <name>_<stamp>_train.log        .train_log(stamp)
        test_results/                   .test_results   eval's predictions for an image-only list
        netspresso/                     .export_dir   export_netspresso's model_modelfx.pt + model_headfx.pt
    LOG_DIR/<dataset>/<name>/           .log_dir   TensorBoard scalars and history.json (.history)

NetsPresso body/head pairs follow one rule, the names of NetsPresso's PIDNet tutorial:
``<prefix>_model<tag>.pt`` is a body and ``<prefix>_head<tag>.pt`` beside it its auxiliary heads
(:func:`pair_names`). The export writes ``model_modelfx.pt`` / ``model_headfx.pt`` (prefix
``model``, tag ``fx``), compression one body (``compressed_pidnet.pt`` by default) that keeps the
exported head, fine-tuning ``best_model_model.pt`` / ``best_model_head.pt`` (prefix
``best_model``). :func:`find_head` turns a body path into its head, for any of these names.

Foundation layer: imports nothing of the project.
"""
import os
import re
from dataclasses import dataclass

CHECKPOINT_FILE = "checkpoint.pth.tar"
BEST_FILE = "best.pt"
FINAL_FILE = "final_state.pt"
HISTORY_FILE = "history.json"
TEST_RESULTS_DIR = "test_results"
EXPORT_DIR = "netspresso"

# NetsPresso files: a body is "<prefix>_model<tag>.pt", its heads "<prefix>_head<tag>.pt".
BODY_PART, HEAD_PART = "_model", "_head"
EXPORT_PREFIX, EXPORT_TAG = "model", "fx"
COMPRESSED_BODY = "compressed_pidnet.pt"
# Bodies written under another name by earlier versions (accepted on input, never written).
LEGACY_COMPRESSED_BODIES = ("compressed_model.pt", "compressed.pt")
QUANTIZE_REPORT = "quantize_report.json"  # tools/quantize.py, beside its model_int8.onnx / model_fp16.onnx

_PAIR_RE = re.compile(r"^(?P<prefix>.+)" + BODY_PART + r"(?P<tag>" + EXPORT_TAG + r")?\.pt$")

# The official pretrained files (pretrained_models/README.md), by (variant, trained on Cityscapes).
OFFICIAL_WEIGHTS = {
    ("pidnet_s", True): "pretrained_models/cityscapes/PIDNet_S_Cityscapes_test.pt",
    ("pidnet_m", True): "pretrained_models/cityscapes/PIDNet_M_Cityscapes_test.pt",
    ("pidnet_l", True): "pretrained_models/cityscapes/PIDNet_L_Cityscapes_test.pt",
    ("pidnet_s", False): "pretrained_models/camvid/PIDNet_S_Camvid_Test.pt",
    ("pidnet_m", False): "pretrained_models/camvid/PIDNet_M_Camvid_Test.pt",
    ("pidnet_l", False): "pretrained_models/camvid/PIDNet_L_Camvid_Test.pt",
}


def pair_names(prefix, tag=""):
    """``(body file name, head file name)`` of a NetsPresso pair, e.g. ``best_model`` ->
    ``('best_model_model.pt', 'best_model_head.pt')``."""
    return f"{prefix}{BODY_PART}{tag}.pt", f"{prefix}{HEAD_PART}{tag}.pt"


EXPORT_BODY, EXPORT_HEAD = pair_names(EXPORT_PREFIX, EXPORT_TAG)  # model_modelfx.pt, model_headfx.pt


def head_name_for(body_name):
    """The head file name paired with a body file name by :func:`pair_names`, or ``None``."""
    match = _PAIR_RE.match(os.path.basename(body_name))
    if not match:
        return None
    return pair_names(match.group("prefix"), match.group("tag") or "")[1]


def find_head(body_path):
    """The auxiliary-head file that goes with ``body_path``, or ``None`` when there is none.

    The head paired by name (``best_model_model.pt`` -> ``best_model_head.pt``,
    ``model_modelfx.pt`` -> ``model_headfx.pt``) comes first; otherwise a compressed body
    (``compressed_pidnet.pt``, any name) sitting in an export folder keeps the exported
    ``model_headfx.pt`` beside it, as in the NetsPresso tutorial.
    """
    folder = os.path.dirname(os.fspath(body_path))
    candidates = [head_name_for(body_path), EXPORT_HEAD]
    for name in candidates:
        if name and os.path.isfile(os.path.join(folder, name)):
            return os.path.join(folder, name)
    return None


def compression_report(body_path):
    """The JSON report tools/compress.py writes beside a compressed body: ``<stem>.json``."""
    return os.path.splitext(os.fspath(body_path))[0] + ".json"


def experiment_name(cfg_file):
    """The official output sub-folder name: the config file's stem (``default`` without one)."""
    return os.path.splitext(os.path.basename(cfg_file or "default"))[0]


def official_weights(variant, cityscapes=True):
    """The official pretrained file of ``variant`` (``pidnet_s``/``_m``/``_l``) for Cityscapes
    (19 classes) or CamVid (11), relative to the repository root."""
    return OFFICIAL_WEIGHTS[(variant, bool(cityscapes))]


@dataclass(frozen=True)
class RunLayout:
    """The files of one experiment: ``OUTPUT_DIR``/``LOG_DIR`` + ``<dataset>/<cfg name>``.

    Args:
        output_dir: ``OUTPUT_DIR``.
        dataset: ``DATASET.DATASET``.
        cfg_name: the experiment name, :func:`experiment_name` of the ``--cfg`` file.
        log_root: ``LOG_DIR``.
    """
    output_dir: str
    dataset: str
    cfg_name: str
    log_root: str = "log"

    @property
    def run_dir(self):
        return os.path.join(self.output_dir, self.dataset, self.cfg_name)

    @property
    def log_dir(self):
        return os.path.join(self.log_root, self.dataset, self.cfg_name)

    @property
    def checkpoint(self):
        return os.path.join(self.run_dir, CHECKPOINT_FILE)

    @property
    def best(self):
        return os.path.join(self.run_dir, BEST_FILE)

    @property
    def final_state(self):
        return os.path.join(self.run_dir, FINAL_FILE)

    def weights(self, kind):
        """``best.pt`` (``kind='best'``) or ``final_state.pt`` (``'final'``)."""
        return self.best if kind == "best" else self.final_state

    def netspresso_pair(self, kind):
        """``(body, head)`` paths a ``--netspresso`` run writes for ``'best'`` or ``'final'``."""
        return tuple(os.path.join(self.run_dir, name) for name in pair_names(f"{kind}_model"))

    @property
    def run_files(self):
        """Names in :attr:`run_dir` that a fresh training run would replace."""
        return (CHECKPOINT_FILE, BEST_FILE, FINAL_FILE, pair_names("best_model")[0], pair_names("final_model")[0])

    def train_log(self, stamp):
        return os.path.join(self.run_dir, f"{self.cfg_name}_{stamp}_train.log")

    @property
    def test_results(self):
        return os.path.join(self.run_dir, TEST_RESULTS_DIR)

    @property
    def export_dir(self):
        return os.path.join(self.run_dir, EXPORT_DIR)

    @property
    def history(self):
        return os.path.join(self.log_dir, HISTORY_FILE)
