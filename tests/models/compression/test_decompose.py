"""Filter decomposition: exact layers at full rank, MAC accounting, composition with pruning."""
import pytest
import torch
import torch.nn as nn

from models.checkpoint import load_module_file
from models.compression import decompose as fd
from models.compression import decompose_layers as fd_layers
from models.compression import decompose_ranks as fd_ranks
from models.compression.pruner import compress_model as prune
from models.compression.report import count_macs
from utils.errors import CompressionError
from utils.io import atomic_save

SIZE = (64, 128)


def _rel(a, b):
    return ((a - b).norm() / b.norm()).item()


CONVS = [dict(in_channels=6, out_channels=10, kernel_size=3, stride=2, padding=1),
         dict(in_channels=8, out_channels=5, kernel_size=(3, 5), stride=(1, 2), padding=(2, 1), dilation=(2, 1)),
         dict(in_channels=4, out_channels=7, kernel_size=3, padding=1, bias=False)]


@pytest.mark.parametrize("kwargs", CONVS)
def test_tucker_at_full_rank_reproduces_the_conv(kwargs):
    torch.manual_seed(0)
    conv = nn.Conv2d(**kwargs)
    x = torch.randn(2, conv.in_channels, 17, 19)
    seq = fd_layers.decompose_layer(conv, "FD_TK", fd_ranks.layer_full_rank(conv, "FD_TK"))
    assert [type(m) for m in seq] == [nn.Conv2d] * 3 and seq[1].stride == conv.stride
    assert _rel(seq(x), conv(x)) < 1e-4


@pytest.mark.parametrize("kwargs", CONVS)
def test_cp_layers_reproduce_a_cp_rank_r_kernel(kwargs):
    torch.manual_seed(1)
    conv, rank = nn.Conv2d(**kwargs), 3
    lambdas = torch.rand(rank, dtype=torch.float64) + 0.5
    factors = [torch.randn(s, rank, dtype=torch.float64) for s in conv.weight.shape]
    with torch.no_grad():
        conv.weight.copy_(torch.einsum("r,or,ir,hr,wr->oihw", lambdas, *factors))
    x = torch.randn(2, conv.in_channels, 17, 19)
    # the stride/padding/dilation split over Kx1 and 1xK is exact for the CP kernel
    assert _rel(fd_layers.cp_layers(conv, lambdas, *factors)(x), conv(x)) < 1e-4
    # tensorly's ALS (a bounded number of sweeps) finds that kernel closely
    seq = fd_layers.decompose_layer(conv, "FD_CP", rank)
    assert [m.groups for m in seq] == [1, rank, rank, 1]
    assert _rel(seq(x), conv(x)) < 0.1


def test_svd_at_full_rank_reproduces_1x1_and_linear():
    torch.manual_seed(2)
    conv, linear = nn.Conv2d(12, 7, 1, stride=2), nn.Linear(12, 7)
    x = torch.randn(1, 12, 9, 9)
    assert _rel(fd_layers.decompose_layer(conv, "FD_SVD", 7)(x), conv(x)) < 1e-4
    v = torch.randn(3, 12)
    assert _rel(fd_layers.decompose_layer(linear, "FD_SVD", 7)(v), linear(v)) < 1e-4
    truncated = fd_layers.decompose_layer(linear, "FD_SVD", 2)
    assert [m.weight.shape for m in truncated] == [(2, 12), (7, 2)]


def test_report_macs_agree_with_the_counter_and_outputs_keep_shape(tiny_sm):
    body, _ = tiny_sm
    ranks, vbmf_ranks = fd_ranks.recommend_ranks(body, "FD_TK", "vbmf", ratio=0.5)
    out, report = fd.decompose_model(body, "FD_TK", ranks, report_sizes=[SIZE], recommendation="vbmf",
                                     ratio=0.5, vbmf_ranks=vbmf_ranks)
    key = f"{SIZE[0]}x{SIZE[1]}"
    assert report["decomposed_layers"] > 0
    assert report["after"]["macs"][key] == count_macs(out, SIZE) < report["before"]["macs"][key]
    saved = sum(e["macs"][0] - e["macs"][1] for e in report["layers"].values())
    assert report["before"]["macs"][key] - report["after"]["macs"][key] == saved
    entry = next(e for e in report["layers"].values() if e["decomposed"])
    assert set(entry) >= {"method", "ranks", "full_ranks", "vbmf_ranks", "params", "macs", "in", "out"}
    assert "conv1.0" in report["layers"]  # the stem conv (3 input channels) is a candidate too
    x = torch.randn(1, 3, *SIZE)
    with torch.no_grad():
        assert [o.shape for o in out(x)] == [o.shape for o in body(x)]


def test_full_rank_would_not_lower_macs_so_layers_are_kept_and_reported(tiny_sm):
    body, _ = tiny_sm
    ranks = fd_ranks.full_ranks(body, "FD_TK")
    out, report = fd.decompose_model(body, "FD_TK", ranks, report_sizes=[SIZE])
    assert report["decomposed_layers"] == 0 and len(report["kept_layers"]) == len(ranks)
    assert all("would not lower MACs" in report["layers"][n]["reason"] for n in ranks)
    assert report["layers"]["spp.scale_process.2"]["reason"].startswith("grouped convolution")
    x = torch.randn(1, 3, *SIZE)
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(out(x), body(x)))


def test_layer_macs_for_rank_is_monotone_in_rank(tiny_sm):
    body, _ = tiny_sm
    geometry = fd_ranks.layer_geometry(body, SIZE)
    name = fd_ranks.decomposable_layers(body, "FD_TK")[3]
    module = body.get_submodule(name)
    costs = [fd_ranks.layer_macs_for_rank(module, "FD_TK", [r, r], geometry[name])[1] for r in (1, 2, 4)]
    assert costs == sorted(costs) and costs[0] < costs[-1]


def test_decompose_then_prune_then_save_and_reload(tiny_sm, fast, tmp_path):
    body, _ = tiny_sm
    decomposed, _ = fd.compress_model(body, "FD_TK", "vbmf", ratio=0.5, report_sizes=[SIZE])
    pruned, report = prune(decomposed, "PR_L2", "slamp", ratio=0.3, **fast)
    eligible = fd_ranks.decomposable_layers(body, "FD_TK")
    rank_layers = [n for n in report["layers"] if n.endswith(".0") and n[:-2] in eligible]
    assert rank_layers and any(report["layers"][n]["out"][1] < report["layers"][n]["out"][0] for n in rank_layers)
    atomic_save(pruned, tmp_path / "m.pt")
    again = load_module_file(str(tmp_path / "m.pt"), what="model").eval()
    x = torch.randn(1, 3, *SIZE)
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(again(x), pruned.eval()(x)))


def test_prune_then_decompose_svd_and_cp(tiny_sm, fast):
    body, _ = tiny_sm
    pruned, _ = prune(body, "PR_L2", "slamp", ratio=0.3, **fast)
    svd, report = fd.compress_model(pruned, "FD_SVD", "vbmf", ratio=0.0, report_sizes=[SIZE])
    assert report["decomposed_layers"] > 0
    name = fd_ranks.decomposable_layers(pruned, "FD_CP")[4]
    cp, report = fd.compress_model(svd, "FD_CP", "manual", layer_ranks={name: 2}, report_sizes=[SIZE])
    assert report["layers"][name]["decomposed"] and report["decomposed_layers"] == 1
    # pruning again: the depthwise CP stages keep their rank (grouped conv outputs are not pruned)
    again, report = prune(cp, "PR_L2", "slamp", ratio=0.2, **fast)
    assert report["layers"][f"{name}.1"]["out"] == [2, 2]
    x = torch.randn(1, 3, *SIZE)
    with torch.no_grad():
        assert [o.shape for o in again(x)] == [o.shape for o in body(x)]


def test_bad_ranks_and_recommendations(tiny_sm):
    body, _ = tiny_sm
    name = fd_ranks.decomposable_layers(body, "FD_TK")[2]
    c_in, c_out = fd_ranks.layer_full_rank(body.get_submodule(name), "FD_TK")
    cases = [({name: [c_in + 1, 1]}, "out of range"), ({name: [0, 1]}, "out of range"),
             ({name: 3}, r"\[r_in, r_out\]"), ({"no.such.layer": [1, 1]}, "no KxK convolution named 'no.such.layer'"),
             ({"layer1.0.conv1": [1, 1, 1]}, r"\[r_in, r_out\]")]
    for ranks, match in cases:
        with pytest.raises(CompressionError, match=match):
            fd_ranks.check_layer_ranks(body, "FD_TK", ranks)
    with pytest.raises(CompressionError, match=r"cannot be decomposed by FD_TK \(grouped convolution"):
        fd_ranks.check_layer_ranks(body, "FD_TK", {"spp.scale_process.2": [1, 1]})
    with pytest.raises(CompressionError, match="no 1x1 convolution or linear layer named 'layer1.0.conv1'"):
        fd_ranks.check_layer_ranks(body, "FD_SVD", {"layer1.0.conv1": 1})
    with pytest.raises(CompressionError, match="vbmf does not recommend CP ranks"):
        fd_ranks.recommend_ranks(body, "FD_CP", "vbmf")
    with pytest.raises(CompressionError, match=r"\[-1, 1\]"):
        fd_ranks.recommend_ranks(body, "FD_TK", "vbmf", ratio=2)
    with pytest.raises(CompressionError, match="needs ranks"):
        fd_ranks.recommend_ranks(body, "FD_SVD", "manual")


@pytest.mark.gpu
def test_decompose_on_cuda_matches_cpu(tiny_sm):
    body, _ = tiny_sm
    ranks, _ = fd_ranks.recommend_ranks(body, "FD_TK", "vbmf", ratio=0.5)
    on_cpu, _ = fd.decompose_model(body, "FD_TK", ranks, report_sizes=[SIZE])
    on_cuda, _ = fd.decompose_model(body, "FD_TK", ranks, report_sizes=[SIZE], device="cuda")
    x = torch.randn(1, 3, *SIZE)
    with torch.no_grad():
        assert all(_rel(a, b) < 1e-4 for a, b in zip(on_cuda(x), on_cpu.eval()(x)))
