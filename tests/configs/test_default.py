"""Config loading: official YAML values, overrides, and one clear error for every mistake."""
import glob
import os

import pytest

from configs.default import get_cfg, load_config
from utils.errors import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CITYSCAPES = sorted(glob.glob(os.path.join(ROOT, "configs", "cityscapes", "*.yaml")))
CAMVID = sorted(glob.glob(os.path.join(ROOT, "configs", "camvid", "*.yaml")))


def test_the_eight_official_experiment_files_exist():
    names = sorted(os.path.basename(p) for p in CITYSCAPES + CAMVID)
    assert names == sorted([f"pidnet_{s}_cityscapes{t}.yaml" for s in ("small", "medium", "large")
                            for t in ("", "_trainval")] + ["pidnet_small_camvid.yaml", "pidnet_medium_camvid.yaml"])


@pytest.mark.parametrize("path", CITYSCAPES, ids=os.path.basename)
def test_cityscapes_official_values(path):
    cfg = load_config(path)
    assert cfg.DATASET.DATASET == "cityscapes" and cfg.DATASET.NUM_CLASSES == 19
    assert list(cfg.TRAIN.IMAGE_SIZE) == [1024, 1024] and cfg.TRAIN.BASE_SIZE == 2048
    assert cfg.TRAIN.BATCH_SIZE_PER_GPU == 6 and cfg.TRAIN.END_EPOCH == 484
    assert cfg.TRAIN.LR == 0.01 and cfg.TRAIN.WD == 0.0005 and cfg.TRAIN.IGNORE_LABEL == 255
    assert cfg.LOSS.OHEMTHRES == 0.9 and cfg.LOSS.OHEMKEEP == 131072
    assert list(cfg.LOSS.BALANCE_WEIGHTS) == [0.4, 1.0] and cfg.LOSS.SB_WEIGHTS == 1.0
    assert list(cfg.TEST.IMAGE_SIZE) == [2048, 1024] and cfg.TEST.OUTPUT_INDEX == 1
    assert cfg.DATASET.TRAIN_SET.endswith("trainval.lst" if "trainval" in path else "/train.lst")
    assert "imagenet" in cfg.MODEL.PRETRAINED


@pytest.mark.parametrize("path", CAMVID, ids=os.path.basename)
def test_camvid_official_values(path):
    cfg = load_config(path)
    assert cfg.DATASET.NUM_CLASSES == 11 and cfg.DATASET.DATASET == "camvid"
    assert list(cfg.TRAIN.IMAGE_SIZE) == [960, 720] and cfg.TRAIN.BASE_SIZE == 960
    assert cfg.TRAIN.LR == 0.005 and cfg.TRAIN.END_EPOCH == 200 and cfg.TRAIN.STOP_EPOCH == 121
    assert cfg.DATASET.TRAIN_SET == "list/camvid/trainval.lst" and cfg.DATASET.TEST_SET == "list/camvid/val.lst"
    assert "cityscapes" in cfg.MODEL.PRETRAINED


def test_overrides_are_typed_like_yacs():
    cfg = load_config(CITYSCAPES[0], ["TRAIN.IMAGE_SIZE", "[256,128]", "TRAIN.LR", "0.1", "DEVICE", "cpu"])
    assert list(cfg.TRAIN.IMAGE_SIZE) == [256, 128] and cfg.TRAIN.LR == 0.1 and cfg.DEVICE == "cpu"
    assert cfg.is_frozen()


def test_get_cfg_returns_fresh_copies():
    a, b = get_cfg(), get_cfg()
    a.TRAIN.LR = 123.0
    assert b.TRAIN.LR != 123.0


def test_missing_file():
    with pytest.raises(ConfigError, match="config file not found: nope.yaml"):
        load_config("nope.yaml")


def test_yaml_syntax_error(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("TRAIN:\n  LR: [0.1\n")
    with pytest.raises(ConfigError, match="YAML syntax error in .*bad.yaml at line"):
        load_config(str(bad))


def test_unknown_key_in_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("TRAIN:\n  LEARNING_RATE: 0.1\n")
    with pytest.raises(ConfigError, match="unknown config key .*LEARNING_RATE"):
        load_config(str(bad))


def test_unknown_key_on_command_line():
    with pytest.raises(ConfigError, match="unknown config key on the command line: .*TRAIN.LRR"):
        load_config(CITYSCAPES[0], ["TRAIN.LRR", "0.1"])


def test_wrong_value_type():
    with pytest.raises(ConfigError, match="bad command-line config value"):
        load_config(CITYSCAPES[0], ["TRAIN.END_EPOCH", "'many'"])


def test_wrong_value_type_in_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("TRAIN:\n  END_EPOCH: lots\n")
    with pytest.raises(ConfigError, match="bad value in .*bad.yaml"):
        load_config(str(bad))


def test_odd_number_of_overrides():
    with pytest.raises(ConfigError, match="KEY VALUE pairs"):
        load_config(CITYSCAPES[0], ["TRAIN.LR"])



# --------------------------------------------------------------------------- shapes, ranges, ignored keys

@pytest.mark.parametrize("opts, message", [
    (["TRAIN.IMAGE_SIZE", "[1024]"], r"TRAIN.IMAGE_SIZE \[1024\] .* two positive integers"),
    (["TEST.IMAGE_SIZE", "[2048,1024,3]"], r"TEST.IMAGE_SIZE \[2048, 1024, 3\]"),
    (["TRAIN.IMAGE_SIZE", "[0,64]"], r"TRAIN.IMAGE_SIZE \[0, 64\]"),
    (["TRAIN.IMAGE_SIZE", "[64.5,64]"], r"TRAIN.IMAGE_SIZE \[64.5, 64\]"),
    (["LOSS.BALANCE_WEIGHTS", "[1.0]"], r"LOSS.BALANCE_WEIGHTS \[1.0\] .* two weights"),
    (["LOSS.BALANCE_WEIGHTS", "[0.4,1.0,1.0]"], r"LOSS.BALANCE_WEIGHTS"),
    (["LOSS.BALANCE_WEIGHTS", "[-0.4,1.0]"], r"LOSS.BALANCE_WEIGHTS"),
    (["TEST.MULTI_SCALE", "True", "TEST.SCALE_LIST", "[]"], r"TEST.MULTI_SCALE True with an empty TEST.SCALE_LIST"),
    (["TEST.SCALE_LIST", "[0.5,0.0]"], r"TEST.SCALE_LIST \[0.5, 0.0\] .* positive"),
    (["DATASET.NUM_CLASSES", "0"], r"DATASET.NUM_CLASSES 0 .* positive"),
    (["DATASET.DATASET", "kitti"], r"unknown dataset 'kitti' .* camvid, cityscapes, custom"),
    (["DATASET.CLASS_NAMES", "['a','b']"], r"DATASET.CLASS_NAMES .* only apply to DATASET.DATASET custom"),
    (["DATASET.CLASS_COLORS", "[[0,0,0]]", "DATASET.CLASS_WEIGHTS", "[1.0]"],
     r"DATASET.CLASS_COLORS, DATASET.CLASS_WEIGHTS .* cityscapes has its own classes"),
])
def test_wrong_shapes_and_ranges_are_refused_at_load(opts, message):
    with pytest.raises(ConfigError, match=message):
        load_config(CITYSCAPES[0], opts)


def test_custom_dataset_takes_class_info():
    cfg = load_config(None, ["DATASET.DATASET", "custom", "DATASET.NUM_CLASSES", "2",
                             "DATASET.CLASS_NAMES", "['a','b']"])
    assert list(cfg.DATASET.CLASS_NAMES) == ["a", "b"]


@pytest.mark.parametrize("text, message", [("", "is empty"), ("# only a comment\n", "is empty"),
                                           ("- a\n- b\n", "holds a YAML list"), ("3\n", "holds a YAML int")])
def test_empty_or_non_mapping_yaml(tmp_path, text, message):
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    with pytest.raises(ConfigError, match=f"config file {bad} {message}"):
        load_config(str(bad))


def test_folder_as_cfg(tmp_path):
    with pytest.raises(ConfigError, match=f"--cfg {tmp_path} is a folder"):
        load_config(str(tmp_path))


IGNORED = {"GPUS": ("(0,1)", "torchrun --nproc_per_node"), "AUTO_RESUME": ("True", "TRAIN.RESUME True"),
           "MODEL.NUM_OUTPUTS": ("3", "TEST.OUTPUT_INDEX"), "LOSS.CLASS_BALANCE": ("True", "DATASET.CLASS_WEIGHTS"),
           "DATASET.EXTRA_TRAIN_SET": ("list/extra.lst", "DATASET.TRAIN_SET"),
           "TRAIN.EXTRA_LR": ("0.5", "TRAIN.LR"), "TRAIN.EXTRA_EPOCH": ("3", "TRAIN.END_EPOCH")}


@pytest.mark.parametrize("key", sorted(IGNORED))
def test_ignored_keys_are_named_once_with_what_to_use(caplog, key):
    value, instead = IGNORED[key]
    with caplog.at_level("INFO", logger="configs.default"):
        load_config(None, [key, value])
    lines = [r.getMessage() for r in caplog.records if "accepted for compatibility" in r.getMessage()]
    assert len(lines) == 1 and lines[0].startswith(f"{key} ") and "ignored" in lines[0] and instead in lines[0]


def test_ignored_keys_are_quiet_at_their_defaults(caplog):
    with caplog.at_level("INFO", logger="configs.default"):
        load_config(None, ["MODEL.NUM_OUTPUTS", "2"])
    assert "accepted for compatibility" not in caplog.text


def test_ignored_keys_table_covers_every_key_nothing_reads(repo_root):
    """Every leaf key of the defaults is read by some tool, or is in IGNORED_KEYS (and then read by none)."""
    import subprocess

    from configs.default import IGNORED_KEYS

    def leaves(node, prefix=""):
        for k, v in node.items():
            if hasattr(v, "items"):
                yield from leaves(v, f"{prefix}{k}.")
            else:
                yield prefix + k

    code = subprocess.run(["git", "grep", "-h", "cfg\\.", "--", "tools", "utils", "models", "datasets", "configs",
                           "benchmarks"], cwd=repo_root, capture_output=True, text=True).stdout
    for key in leaves(get_cfg()):
        read = f"cfg.{key}" in code
        assert read != (key in IGNORED_KEYS), f"{key}: read={read}, listed as ignored={key in IGNORED_KEYS}"
