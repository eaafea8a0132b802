"""utils/layout.py: every artifact path and name, and the NetsPresso body/head pairing."""
import ast
import os

import pytest

from utils import layout
from utils.layout import RunLayout, experiment_name, find_head, head_name_for, pair_names


def test_experiment_name():
    assert experiment_name("configs/cityscapes/pidnet_small_cityscapes.yaml") == "pidnet_small_cityscapes"
    assert experiment_name(None) == "default"


def test_run_layout_paths():
    run = RunLayout("output", "cityscapes", "pidnet_small_cityscapes", "log")
    folder = os.path.join("output", "cityscapes", "pidnet_small_cityscapes")
    assert run.run_dir == folder
    assert run.log_dir == os.path.join("log", "cityscapes", "pidnet_small_cityscapes")
    assert run.checkpoint == os.path.join(folder, "checkpoint.pth.tar")
    assert run.best == run.weights("best") == os.path.join(folder, "best.pt")
    assert run.final_state == run.weights("final") == os.path.join(folder, "final_state.pt")
    assert run.netspresso_pair("best") == (os.path.join(folder, "best_model_model.pt"),
                                           os.path.join(folder, "best_model_head.pt"))
    assert run.netspresso_pair("final")[0] == os.path.join(folder, "final_model_model.pt")
    assert run.test_results == os.path.join(folder, "test_results")
    assert run.export_dir == os.path.join(folder, "netspresso")
    assert run.history == os.path.join(run.log_dir, "history.json")
    assert run.train_log("2024-01-01-10-00") == os.path.join(folder, "pidnet_small_cityscapes_2024-01-01-10-00_train.log")
    assert set(run.run_files) == {"checkpoint.pth.tar", "best.pt", "final_state.pt", "best_model_model.pt",
                                  "final_model_model.pt"}


def test_run_layout_is_frozen():
    run = RunLayout("output", "camvid", "x")
    with pytest.raises(AttributeError):
        run.output_dir = "elsewhere"


def test_the_tutorial_names_follow_one_pair_rule():
    assert pair_names("model", "fx") == ("model_modelfx.pt", "model_headfx.pt") == (layout.EXPORT_BODY,
                                                                                     layout.EXPORT_HEAD)
    assert pair_names("best_model") == ("best_model_model.pt", "best_model_head.pt")
    assert layout.COMPRESSED_BODY == "compressed_pidnet.pt"


@pytest.mark.parametrize("body,head", [
    ("model_modelfx.pt", "model_headfx.pt"),            # tools/export_netspresso.py
    ("best_model_model.pt", "best_model_head.pt"),      # tools/train.py --netspresso
    ("final_model_model.pt", "final_model_head.pt"),
    ("model_model.pt", "model_head.pt"),                # the NetsPresso tutorial's fine-tuning command
    ("out/x/best_model_model.pt", "best_model_head.pt"),
    ("compressed_pidnet.pt", None),                     # a compressed body keeps the exported head
    ("weights.pth", None),
])
def test_head_name_for(body, head):
    assert head_name_for(body) == head


def test_find_head_accepts_every_written_name(tmp_path):
    for name in ("model_modelfx.pt", "model_headfx.pt", "best_model_model.pt", "best_model_head.pt",
                 "compressed_pidnet.pt", "compressed_model.pt"):
        (tmp_path / name).write_bytes(b"")
    assert find_head(tmp_path / "model_modelfx.pt") == str(tmp_path / "model_headfx.pt")
    assert find_head(tmp_path / "best_model_model.pt") == str(tmp_path / "best_model_head.pt")
    # Compressed bodies (today's and the old demo name) sit beside the exported head.
    assert find_head(tmp_path / "compressed_pidnet.pt") == str(tmp_path / "model_headfx.pt")
    assert find_head(tmp_path / "compressed_model.pt") == str(tmp_path / "model_headfx.pt")


def test_find_head_without_a_head(tmp_path):
    (tmp_path / "best_model_model.pt").write_bytes(b"")
    assert find_head(tmp_path / "best_model_model.pt") is None
    assert find_head(tmp_path / "compressed_pidnet.pt") is None


def test_compression_report_and_official_weights():
    assert layout.compression_report("out/compressed_pidnet.pt") == os.path.join("out", "compressed_pidnet.json")
    assert layout.official_weights("pidnet_s") == "pretrained_models/cityscapes/PIDNet_S_Cityscapes_test.pt"
    assert layout.official_weights("pidnet_l", cityscapes=False) == "pretrained_models/camvid/PIDNet_L_Camvid_Test.pt"


def test_layout_is_foundation(repo_root):
    """utils/layout.py imports nothing of the project (datasets, models, configs, tools, utils)."""
    with open(os.path.join(repo_root, "utils", "layout.py"), encoding="utf-8") as handle:
        tree = ast.parse(handle.read())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert not imported & {"configs", "datasets", "models", "tools", "utils", "benchmarks"}
