"""Config loading: official YAML values, overrides, and one clear error for every mistake."""
import glob
import os

import pytest

from configs.default import experiment_name, get_cfg, load_config
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


def test_experiment_name():
    assert experiment_name("configs/cityscapes/pidnet_small_cityscapes.yaml") == "pidnet_small_cityscapes"
