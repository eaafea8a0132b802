import enum
import sys
import types

import pytest

from models.compression import cloud
from utils.errors import CompressionError

SHAPES = [{"batch": 1, "channel": 3, "dimension": [1024, 2048]}]


class FakeService:
    """Stands in for the ``netspresso`` package at its import boundary."""

    def __init__(self, fail=None, status="completed", write=True):
        self.fail, self.status, self.write = fail, status, write
        self.logins, self.requests = [], []

    def install(self, monkeypatch):
        package = types.ModuleType("netspresso")
        enums = types.ModuleType("netspresso.enums")
        enums.CompressionMethod = enum.Enum("CompressionMethod", ["PR_L2", "PR_GM", "PR_ID", "PR_NN", "FD_TK"])
        enums.RecommendationMethod = enum.Enum("RecommendationMethod", ["SLAMP", "VBMF"])
        service = self

        class Compressor:
            def recommendation_compression(self, **kwargs):
                service.requests.append(kwargs)
                if service.fail:
                    raise service.fail
                path = None
                if service.write:
                    import os
                    os.makedirs(kwargs["output_dir"], exist_ok=True)
                    path = os.path.join(kwargs["output_dir"], "compressed.pt")
                    with open(path, "wb") as handle:
                        handle.write(b"model")
                return types.SimpleNamespace(status=service.status, compressed_model_path=path)

        class NetsPresso:
            def __init__(self, **kwargs):
                service.logins.append(kwargs)

            def compressor_v2(self):
                return Compressor()

        package.NetsPresso = NetsPresso
        package.enums = enums
        monkeypatch.setitem(sys.modules, "netspresso", package)
        monkeypatch.setitem(sys.modules, "netspresso.enums", enums)
        self.enums = enums
        return self


@pytest.fixture
def model_file(tmp_path):
    path = tmp_path / "model_modelfx.pt"
    path.write_bytes(b"fx")
    return str(path)


def test_request_arguments_and_enum_mapping(monkeypatch, model_file, tmp_path):
    service = FakeService().install(monkeypatch)
    out = cloud.compress_in_cloud(model_file, str(tmp_path / "np"), "PR_L2", "slamp", 0.6, SHAPES,
                                  environ={"NETSPRESSO_API_KEY": "k-123"})
    assert out == str(tmp_path / "np" / "compressed.pt")
    assert service.logins == [{"api_key": "k-123"}]
    (request,) = service.requests
    assert request["compression_method"] is service.enums.CompressionMethod.PR_L2
    assert request["recommendation_method"] is service.enums.RecommendationMethod.SLAMP
    assert request["recommendation_ratio"] == 0.6
    assert request["input_model_path"] == model_file
    assert request["output_dir"] == str(tmp_path / "np")
    assert request["input_shapes"] == SHAPES


def test_email_password_login_and_gm(monkeypatch, model_file, tmp_path):
    service = FakeService().install(monkeypatch)
    cloud.compress_in_cloud(model_file, str(tmp_path / "np"), "pr_gm", "slamp", 0.3, SHAPES,
                            environ={"NETSPRESSO_EMAIL": "a@b.c", "NETSPRESSO_PASSWORD": "pw"})
    assert service.logins == [{"email": "a@b.c", "password": "pw"}]
    assert service.requests[0]["compression_method"] is service.enums.CompressionMethod.PR_GM


def test_missing_credentials(monkeypatch, model_file, tmp_path):
    FakeService().install(monkeypatch)
    with pytest.raises(CompressionError, match="NETSPRESSO_API_KEY"):
        cloud.compress_in_cloud(model_file, str(tmp_path), "PR_L2", "slamp", 0.5, SHAPES,
                                environ={"NETSPRESSO_EMAIL": "only@email"})


def test_missing_package(monkeypatch, model_file, tmp_path):
    monkeypatch.setitem(sys.modules, "netspresso", None)  # makes the import fail
    with pytest.raises(CompressionError, match="pip install netspresso"):
        cloud.compress_in_cloud(model_file, str(tmp_path), "PR_L2", "slamp", 0.5, SHAPES,
                                environ={"NETSPRESSO_API_KEY": "k"})


def test_unreachable_service_hides_secrets(monkeypatch, model_file, tmp_path):
    FakeService(fail=ConnectionError("cannot reach api.netspresso.ai with key s3cret-key")).install(monkeypatch)
    with pytest.raises(CompressionError, match="NetsPresso request failed.*ConnectionError") as info:
        cloud.compress_in_cloud(model_file, str(tmp_path), "PR_L2", "slamp", 0.5, SHAPES,
                                environ={"NETSPRESSO_API_KEY": "s3cret-key"})
    assert "s3cret-key" not in str(info.value) and "***" in str(info.value)


def test_failed_status_and_missing_result(monkeypatch, model_file, tmp_path):
    FakeService(status="Status.ERROR").install(monkeypatch)
    with pytest.raises(CompressionError, match="status"):
        cloud.compress_in_cloud(model_file, str(tmp_path / "a"), "PR_L2", "slamp", 0.5, SHAPES,
                                environ={"NETSPRESSO_API_KEY": "k"})
    FakeService(write=False).install(monkeypatch)
    with pytest.raises(CompressionError, match="no compressed model file"):
        cloud.compress_in_cloud(model_file, str(tmp_path / "b"), "PR_L2", "slamp", 0.5, SHAPES,
                                environ={"NETSPRESSO_API_KEY": "k"})


def test_unsupported_requests(monkeypatch, model_file, tmp_path):
    service = FakeService().install(monkeypatch)
    env = {"NETSPRESSO_API_KEY": "k"}
    with pytest.raises(CompressionError, match="supports --recommendation slamp"):
        cloud.compress_in_cloud(model_file, str(tmp_path), "PR_L2", "manual", 0.5, SHAPES, environ=env)
    with pytest.raises(CompressionError, match="unknown compression method"):
        cloud.compress_in_cloud(model_file, str(tmp_path), "FD_XX", "slamp", 0.5, SHAPES, environ=env)
    with pytest.raises(CompressionError, match="model file not found"):
        cloud.compress_in_cloud(str(tmp_path / "none.pt"), str(tmp_path), "PR_L2", "slamp", 0.5, SHAPES,
                                environ=env)
    assert service.requests == []
