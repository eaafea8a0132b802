"""configs/build.py: the one path from a frozen config to datasets, models, runtime and layout."""
import os

import pytest
import torch

from configs import build
from configs.default import load_config
from models.checkpoint import official_state_dict
from models.pidnet import build_pidnet
from utils.errors import CheckpointError
from utils.layout import RunLayout


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory):
    from datasets.synthetic import generate

    root = str(tmp_path_factory.mktemp("synthetic")) + os.sep
    generate(root, num_train=2, num_val=2, num_test=0, size=(96, 64), layouts=("cityscapes",))
    return root


def config(root, *opts):
    return load_config(None, ["DATASET.ROOT", root, "DATASET.TRAIN_SET", "list/cityscapes/train.lst",
                              "DATASET.TEST_SET", "list/cityscapes/val.lst", *opts])


def test_image_hw_swaps_width_height():
    assert build.image_hw([1024, 512]) == (512, 1024)


def test_datasets_get_crops_in_height_width_order(synthetic_root):
    # IMAGE_SIZE is [width, height]: non-square sizes catch a missing or doubled swap.
    cfg = config(synthetic_root, "TRAIN.IMAGE_SIZE", "[48,32]", "TRAIN.BASE_SIZE", "96",
                 "TRAIN.MULTI_SCALE", "True", "TEST.IMAGE_SIZE", "[96,64]", "TEST.BASE_SIZE", "96")
    train_set = build.build_train_dataset(cfg)
    assert train_set.crop_size == (32, 48) and train_set.is_train and train_set.multi_scale
    image, label, *_ = train_set[0]
    assert tuple(image.shape) == (3, 32, 48) and tuple(label.shape) == (32, 48)

    for test_set in (build.build_test_dataset(cfg), build.build_val_dataset(cfg)):
        assert test_set.crop_size == (64, 96) and not test_set.is_train and not test_set.flip
        assert len(test_set) == 2
        image, label, *_ = test_set[0]
        assert tuple(image.shape) == (3, 64, 96)  # whole images at test time


def test_test_dataset_takes_another_list(synthetic_root):
    cfg = config(synthetic_root)
    assert len(build.build_test_dataset(cfg, "list/cityscapes/train.lst")) == 2


@pytest.fixture
def cudnn_flags():
    saved = (torch.backends.cudnn.enabled, torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic)
    yield
    torch.backends.cudnn.enabled, torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = saved


@pytest.mark.parametrize("enabled,benchmark,deterministic,expected", [
    (True, True, False, (True, True, False)),
    (False, False, False, (False, False, False)),
    (True, True, True, (True, False, True)),  # deterministic wins over autotuning
])
def test_runtime_applies_cudnn_flags_from_config(cudnn_flags, monkeypatch, enabled, benchmark, deterministic,
                                                 expected):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    cfg = load_config(None, ["CUDNN.ENABLED", str(enabled), "CUDNN.BENCHMARK", str(benchmark),
                             "CUDNN.DETERMINISTIC", str(deterministic)])
    runtime = build.build_runtime(cfg, "cpu")
    assert runtime.device == torch.device("cpu") and not runtime.owns_group and runtime.dist.world_size == 1
    flags = (torch.backends.cudnn.enabled, torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic)
    assert flags == expected
    assert ("CUBLAS_WORKSPACE_CONFIG" in os.environ) == deterministic
    runtime.close()


def test_runtime_device_from_config_unless_given(cudnn_flags):
    assert build.build_runtime(load_config(None, ["DEVICE", "cpu"])).device.type == "cpu"
    assert build.build_runtime(load_config(None, ["DEVICE", "auto"]), "cpu").device.type == "cpu"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(1)
    net = build_pidnet("pidnet_s", 5, augment=True)
    path = tmp_path_factory.mktemp("ckpt") / "best.pt"
    torch.save(official_state_dict(net), path)
    return str(path), net.state_dict()


def test_model_from_config_loads_the_checkpoint(checkpoint):
    path, state = checkpoint
    cfg = load_config(None, ["MODEL.NAME", "pidnet_s", "DATASET.NUM_CLASSES", "5", "TEST.MODEL_FILE", path])
    model = build.build_model(cfg)  # TEST.MODEL_FILE
    assert model.augment
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
    main_only = build.build_model(cfg, path, augment=False)
    assert not main_only.augment
    assert torch.equal(main_only.state_dict()["final_layer.conv2.weight"], state["final_layer.conv2.weight"])


def test_model_from_config_refuses_another_class_count(checkpoint):
    cfg = load_config(None, ["DATASET.NUM_CLASSES", "19"])
    with pytest.raises(CheckpointError, match="5 classes.*DATASET.NUM_CLASSES 5"):
        build.build_model(cfg, checkpoint[0])


def test_model_from_config_needs_weights():
    with pytest.raises(CheckpointError, match="TEST.MODEL_FILE"):
        build.build_model(load_config(None, []))


def test_load_pidnet_names_the_tools_own_option(checkpoint):
    with pytest.raises(CheckpointError, match="pass --c 5"):
        build.load_pidnet("pidnet_s", 19, checkpoint[0], classes_fix="pass --c {n}")
    random = build.load_pidnet("pidnet_s", 5)  # no weights: random initialisation
    assert not torch.equal(random.state_dict()["final_layer.conv2.weight"],
                           checkpoint[1]["final_layer.conv2.weight"])


def test_train_model_loads_pretrained_unless_resuming(checkpoint, caplog):
    path, state = checkpoint
    cfg = load_config(None, ["DATASET.NUM_CLASSES", "5", "MODEL.PRETRAINED", path])
    model = build.build_train_model(cfg)
    assert torch.equal(model.state_dict()["final_layer.conv2.weight"], state["final_layer.conv2.weight"])
    resumed = build.build_train_model(cfg, resume=True)
    assert not torch.equal(resumed.state_dict()["final_layer.conv2.weight"], state["final_layer.conv2.weight"])


def test_netspresso_model_from_body_and_head(checkpoint, tmp_path):
    from models.netspresso import NetsPressoPIDNet, export_pidnet

    net = build_pidnet("pidnet_s", 5, augment=True)
    net.load_state_dict(checkpoint[1])
    body, head = export_pidnet(net.eval())
    torch.save(body, tmp_path / "model_modelfx.pt")
    torch.save(head, tmp_path / "model_headfx.pt")
    cfg = load_config(None, ["DATASET.NUM_CLASSES", "5"])
    model = build.build_model(cfg, netspresso=(str(tmp_path / "model_modelfx.pt"), str(tmp_path / "model_headfx.pt")))
    assert isinstance(model, NetsPressoPIDNet) and model.head is not None
    assert build.load_body(str(tmp_path / "model_modelfx.pt")) is not None
    with pytest.raises(CheckpointError, match="auxiliary heads"):
        build.load_body(str(tmp_path / "model_headfx.pt"))


def test_run_layout_from_config():
    cfg = load_config(None, ["OUTPUT_DIR", "out", "LOG_DIR", "tb", "DATASET.DATASET", "camvid"])
    layout = build.run_layout(cfg, "configs/camvid/pidnet_small_camvid.yaml")
    assert layout == RunLayout("out", "camvid", "pidnet_small_camvid", "tb")
    assert layout.best == os.path.join("out", "camvid", "pidnet_small_camvid", "best.pt")
    assert layout.log_dir == os.path.join("tb", "camvid", "pidnet_small_camvid")
