import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from models.calibration import randomize_bn
from models.pidnet import PIDNet
from utils.criterion import build_criterion
from utils.errors import ConfigError, ModelError
from utils.evaluate import ShardedEvalSampler, evaluate
from utils.metrics import metrics_from_matrix

NUM_CLASSES = 4


class TinySet(Dataset):
    """In-memory samples in the dataset tuple format (image, label, edge, size, name)."""

    def __init__(self, n=4, height=32, width=48, labelled=True, seed=0):
        gen = torch.Generator().manual_seed(seed)
        self.images = torch.randn(n, 3, height, width, generator=gen)
        if labelled:
            self.labels = torch.randint(0, NUM_CLASSES, (n, height, width), generator=gen)
            self.labels[:, :3] = 255
        else:
            self.labels = torch.full((n, height, width), 255, dtype=torch.int64)
        self.edges = (torch.rand(n, height, width, generator=gen) > 0.85).float()
        self.palette = [(10, 20, 30), (40, 50, 60), (70, 80, 90), (100, 110, 120)]

    def train_id_to_label_id(self, label):
        return np.asarray(label).astype(np.uint8) + 10

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        size = torch.tensor(self.images.shape[-2:], dtype=torch.int64)
        return self.images[i], self.labels[i], self.edges[i], size, f"img{i}"


def tiny_pidnet(seed=0):
    torch.manual_seed(seed)
    model = PIDNet(m=2, n=3, num_classes=NUM_CLASSES, planes=8, ppm_planes=16, head_planes=16, augment=True)
    return randomize_bn(model, seed=seed, calibrate=None)  # eval-mode BN is not the identity


def _direct(model, dataset, output=1, flip=False, scales=(1.0,)):
    """Confusion matrix computed straight from the definitions, image by image."""
    matrix = np.zeros((NUM_CLASSES, NUM_CLASSES), dtype=np.int64)
    preds = []
    with torch.no_grad():
        for i in range(len(dataset)):
            image, label = dataset.images[i:i + 1], dataset.labels[i]
            h, w = label.shape
            probs = 0
            for s in scales:
                x = image if s == 1.0 else F.interpolate(image, size=(int(h * s + 0.5), int(w * s + 0.5)),
                                                         mode="bilinear", align_corners=False)
                for flipped in ((False, True) if flip else (False,)):
                    out = model(x.flip(-1) if flipped else x)[output]
                    out = out.flip(-1) if flipped else out
                    out = F.interpolate(out, size=(h, w), mode="bilinear", align_corners=True)
                    probs = probs + F.softmax(out, dim=1)
            pred = probs.argmax(1)[0].numpy()
            preds.append(pred)
            lab = label.numpy()
            keep = lab != 255
            np.add.at(matrix, (lab[keep], pred[keep]), 1)
    return matrix, preds


def _loader(dataset, batch_size=2, **kwargs):
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, **kwargs)


def test_plain_evaluation_matches_direct_computation():
    model, data = tiny_pidnet(), TinySet()
    result = evaluate(model, _loader(data), NUM_CLASSES, output_index=1, progress=False)
    main, _ = _direct(model, data, output=1)
    expected = metrics_from_matrix(main)
    assert result["confusion_matrix"] == main.tolist()
    assert result["mean_iou"] == pytest.approx(expected["mean_iou"])
    assert result["iou"] == pytest.approx(expected["iou"])
    assert result["pixel_acc"] == pytest.approx(expected["pixel_acc"])
    assert result["mean_acc"] == pytest.approx(expected["mean_acc"])
    assert result["num_images"] == 4 and result["images_per_sec"] > 0
    assert result["labelled_pixels"] == int((data.labels != 255).sum())
    assert result["loss"] is None
    # one metrics entry per class-score output: P head (0) and main head (1), not the boundary (2)
    assert [o["index"] for o in result["outputs"]] == [0, 1]
    p_head, _ = _direct(model, data, output=0)
    assert result["outputs"][0]["mean_iou"] == pytest.approx(metrics_from_matrix(p_head)["mean_iou"])
    assert result["output_index"] == 1


def test_output_index_selects_the_headline_and_rejects_the_boundary_head():
    model, data = tiny_pidnet(), TinySet(n=2)
    p_result = evaluate(model, _loader(data), NUM_CLASSES, output_index=0, progress=False)
    p_head, _ = _direct(model, data, output=0)
    assert p_result["confusion_matrix"] == p_head.tolist()
    assert evaluate(model, _loader(data), NUM_CLASSES, output_index=-2, progress=False)["output_index"] == 1
    with pytest.raises(ConfigError, match="OUTPUT_INDEX -1"):
        evaluate(model, _loader(data), NUM_CLASSES, output_index=-1, progress=False)
    with pytest.raises(ConfigError, match="out of range"):
        evaluate(model, _loader(data), NUM_CLASSES, output_index=5, progress=False)


def test_single_tensor_model_ignores_output_index():
    model, data = tiny_pidnet(), TinySet(n=2)
    model.augment = False
    result = evaluate(model, _loader(data), NUM_CLASSES, output_index=1, progress=False)
    main, _ = _direct(lambda x: [None, model(x)], data, output=1)
    assert result["confusion_matrix"] == main.tolist()
    assert len(result["outputs"]) == 1


def test_wrong_class_count_is_a_clear_error():
    model, data = tiny_pidnet(), TinySet(n=1)
    with pytest.raises(ModelError, match="no output with 7 classes"):
        evaluate(model, _loader(data), 7, progress=False)


def test_flip_test_averages_flipped_probabilities():
    model, data = tiny_pidnet(), TinySet(n=3)
    plain = evaluate(model, _loader(data), NUM_CLASSES, output_index=1, progress=False)
    flipped = evaluate(model, _loader(data), NUM_CLASSES, output_index=1, flip_test=True, progress=False)
    expected, _ = _direct(model, data, flip=True)
    assert flipped["confusion_matrix"] == expected.tolist()
    assert flipped["confusion_matrix"] != plain["confusion_matrix"]  # a random net is not flip-symmetric
    assert sum(map(sum, flipped["confusion_matrix"])) == sum(map(sum, plain["confusion_matrix"]))


def test_flip_test_is_exact_for_a_flip_equivariant_model():
    torch.manual_seed(3)
    conv = nn.Conv2d(3, NUM_CLASSES, 1).eval()  # a 1x1 conv commutes with flips
    data = TinySet(n=2)
    plain = evaluate(conv, _loader(data), NUM_CLASSES, progress=False)
    flipped = evaluate(conv, _loader(data), NUM_CLASSES, flip_test=True, progress=False)
    assert flipped["confusion_matrix"] == plain["confusion_matrix"]


def test_multi_scale_averages_probabilities_over_scales():
    model, data = tiny_pidnet(), TinySet(n=1)
    scales = [0.5, 1.0, 1.5]
    result = evaluate(model, _loader(data, batch_size=1), NUM_CLASSES, output_index=1, scales=scales,
                      flip_test=True, progress=False)
    expected, _ = _direct(model, data, flip=True, scales=scales)
    assert result["confusion_matrix"] == expected.tolist()
    only_small = evaluate(model, _loader(data), NUM_CLASSES, output_index=1, scales=[0.5], progress=False)
    expected_small, _ = _direct(model, data, scales=[0.5])
    assert only_small["confusion_matrix"] == expected_small.tolist()


def test_validation_loss_is_the_mean_criterion_per_image():
    model, data = tiny_pidnet(), TinySet(n=4)
    crit = build_criterion(NUM_CLASSES, 255, True, 0.9, 100, None, [0.4, 1.0], 1.0, True)
    expected = []
    with torch.no_grad():
        for start in (0, 2):
            sl = slice(start, start + 2)
            loss, _ = crit(model(data.images[sl]), data.labels[sl], data.edges[sl])
            expected.append(loss.item())
    result = evaluate(model, _loader(data), NUM_CLASSES, output_index=1, criterion=crit, progress=False)
    assert result["loss"] == pytest.approx(np.mean(expected), rel=1e-5)
    # with a scale list that lacks 1.0, the loss still comes from the plain forward
    result = evaluate(model, _loader(data), NUM_CLASSES, output_index=1, criterion=crit, scales=[0.5],
                      progress=False)
    assert result["loss"] == pytest.approx(np.mean(expected), rel=1e-5)


def test_loss_needs_training_outputs():
    model, data = tiny_pidnet(), TinySet(n=1)
    model.augment = False
    crit = build_criterion(NUM_CLASSES)
    with pytest.raises(ModelError, match="augment=True"):
        evaluate(model, _loader(data), NUM_CLASSES, criterion=crit, progress=False)


def test_module_mode_is_restored():
    model, data = tiny_pidnet(), TinySet(n=1)
    model.train()
    evaluate(model, _loader(data), NUM_CLASSES, output_index=1, progress=False)
    assert model.training
    # and evaluation ran in eval mode (BatchNorm running statistics untouched)
    before = [b.clone() for b in model.buffers()]
    evaluate(model, _loader(data), NUM_CLASSES, output_index=1, progress=False)
    assert all(torch.equal(a, b) for a, b in zip(before, model.buffers()))


def test_saves_label_id_and_colour_pngs(tmp_path):
    model, data = tiny_pidnet(), TinySet(n=2, labelled=False)
    result = evaluate(model, _loader(data), NUM_CLASSES, output_index=1, save_dir=str(tmp_path),
                      save_color=True, progress=False)
    assert result["labelled_pixels"] == 0 and result["mean_iou"] == 0.0
    _, preds = _direct(model, data)
    for i, pred in enumerate(preds):
        ids = cv2.imread(str(tmp_path / f"img{i}.png"), cv2.IMREAD_UNCHANGED)
        np.testing.assert_array_equal(ids, pred + 10)
        color = cv2.imread(str(tmp_path / "color" / f"img{i}.png"))[..., ::-1]
        np.testing.assert_array_equal(color, np.asarray(data.palette, np.uint8)[pred])
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_sharded_sampler_covers_every_index_once():
    data = TinySet(n=5)
    shards = [list(ShardedEvalSampler(data, rank, 2)) for rank in range(2)]
    assert sorted(shards[0] + shards[1]) == list(range(5))
    assert [len(ShardedEvalSampler(data, r, 2)) for r in range(2)] == [3, 2]
    assert list(ShardedEvalSampler(data, 6, 8)) == []


_DIST_SCRIPT = """
import json, os, sys, importlib.util
import torch, torch.distributed as dist
sys.path.insert(0, {root!r})
spec = importlib.util.spec_from_file_location("evaltest", {test_file!r})
mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
from torch.utils.data import DataLoader
from utils.evaluate import eval_sampler, evaluate
from utils.criterion import build_criterion
torch.set_num_threads(1)
dist.init_process_group("gloo")
data = mod.TinySet(n=5)
loader = DataLoader(data, batch_size=1, sampler=eval_sampler(data))
crit = build_criterion(mod.NUM_CLASSES, 255, True, 0.9, 100)
result = evaluate(mod.tiny_pidnet(), loader, mod.NUM_CLASSES, output_index=1, criterion=crit, progress=False)
with open(os.path.join({out!r}, "rank%d.json" % dist.get_rank()), "w") as f:
    json.dump(result, f)
dist.destroy_process_group()
"""


@pytest.mark.slow
def test_distributed_evaluation_equals_single_process(tmp_path, repo_root):
    script = tmp_path / "run.py"
    script.write_text(_DIST_SCRIPT.format(root=repo_root, test_file=os.path.abspath(__file__), out=str(tmp_path)))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(script)], cwd=repo_root, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = TinySet(n=5)
    crit = build_criterion(NUM_CLASSES, 255, True, 0.9, 100)
    single = evaluate(tiny_pidnet(), _loader(data, batch_size=1), NUM_CLASSES, output_index=1, criterion=crit,
                      progress=False)
    for rank in range(2):
        with open(tmp_path / f"rank{rank}.json") as handle:
            result = json.load(handle)
        assert result["confusion_matrix"] == single["confusion_matrix"]
        assert result["num_images"] == 5
        assert result["mean_iou"] == pytest.approx(single["mean_iou"])
        assert result["loss"] == pytest.approx(single["loss"], rel=1e-5)


@pytest.mark.gpu
def test_cuda_evaluation_matches_cpu():
    model, data = tiny_pidnet(), TinySet(n=2)
    cpu = evaluate(model, _loader(data), NUM_CLASSES, output_index=1, progress=False)
    gpu = evaluate(model.cuda(), _loader(data), NUM_CLASSES, output_index=1, progress=False)
    assert gpu["mean_iou"] == pytest.approx(cpu["mean_iou"], abs=1e-3)
