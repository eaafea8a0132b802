"""The console's work directory: no path escapes, checked uploads, all-or-nothing result folders."""
import io
import os

import cv2
import numpy as np
import pytest
import torch

from utils.console.workspace import Workspace, file_kind
from utils.errors import ConsoleError


def test_paths_stay_inside_the_work_directory(workdir, tmp_path):
    ws = Workspace(workdir)
    assert ws.path("tiny/model_modelfx.pt") == os.path.join(ws.root, "tiny", "model_modelfx.pt")
    (tmp_path / "secret.pt").write_bytes(b"x")
    os.symlink(tmp_path / "secret.pt", workdir / "link.pt")
    for name in ("../secret.pt", str(tmp_path / "secret.pt"), "tiny/../../secret.pt", "link.pt", "", "."):
        with pytest.raises(ConsoleError, match="outside the work directory|not a file name inside"):
            ws.path(name)
    with pytest.raises(ConsoleError, match="does not exist"):
        ws.path("tiny/missing.pt")


def test_file_kinds_without_unpickling(workdir, tmp_path):
    torch.save({"w": torch.zeros(2)}, tmp_path / "weights.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a model")
    (tmp_path / "c.yaml").write_text("MODEL:\n  NAME: pidnet_s\n")
    assert file_kind(str(workdir / "tiny" / "model_modelfx.pt")) == "module"
    assert file_kind(str(tmp_path / "weights.pt")) == "weights"
    assert file_kind(str(tmp_path / "junk.pt")) == "other"
    assert file_kind(str(tmp_path / "c.yaml")) == "config"


def test_uploads_refuse_pickles_oversize_and_junk_leaving_nothing(workdir, tmp_path):
    module_bytes = (workdir / "tiny" / "model_modelfx.pt").read_bytes()
    buffer = io.BytesIO()
    torch.save({"w": torch.zeros(3)}, buffer)
    ws = Workspace(workdir, max_upload_mb=3)
    before = sorted(os.listdir(workdir))
    with pytest.raises(ConsoleError, match="whole pickled module.*--allow-pickle-uploads"):
        ws.save_upload("body.pt", io.BytesIO(module_bytes))
    with pytest.raises(ConsoleError, match="larger than the limit of 3 MB"):
        ws.save_upload("big.pt", io.BytesIO(b"0" * (4 << 20)))
    with pytest.raises(ConsoleError, match="not a model file"):
        ws.save_upload("junk.pt", io.BytesIO(b"junk"))
    with pytest.raises(ConsoleError, match="not a model, weights, config or image file"):
        ws.save_upload("notes.txt", io.BytesIO(b"x"))
    # An "image" that does not decode (e.g. a pickle renamed .png) is refused the same way.
    for fake in (b"not an image", module_bytes):
        with pytest.raises(ConsoleError, match=r"upload 'x.png' is not an image .*upload a .png, .jpg or .bmp"):
            ws.save_upload("x.png", io.BytesIO(fake))
    assert sorted(os.listdir(workdir)) == before  # no uploads/ folder, no temporary file
    assert ws.save_upload("../../w.pt", io.BytesIO(buffer.getvalue())) == "uploads/w.pt"
    assert ws.save_upload("w.pt", io.BytesIO(buffer.getvalue())) == "uploads/w_1.pt"
    trusted = Workspace(workdir, allow_pickle_uploads=True)
    assert trusted.save_upload("body.pt", io.BytesIO(module_bytes)) == "uploads/body.pt"
    assert sorted(os.listdir(workdir / "uploads")) == ["body.pt", "w.pt", "w_1.pt"]
    ok, png = cv2.imencode(".png", np.full((40, 60, 3), 90, np.uint8))
    assert ws.save_upload("a b.png", io.BytesIO(png.tobytes())) == "uploads/images/a_b.png"
    assert {"name": "uploads/images", "images": 1} in ws.listing()["image_folders"]


def test_run_dir_is_all_or_nothing(workdir):
    ws = Workspace(workdir)
    before = sorted(os.listdir(workdir))
    with pytest.raises(RuntimeError):
        with ws.run_dir("x") as (tmp, final):
            open(os.path.join(tmp, "half.pt"), "wb").close()
            raise RuntimeError("job failed")
    assert sorted(os.listdir(workdir)) == before
    with ws.run_dir("x") as (tmp, final):
        open(os.path.join(tmp, "done.pt"), "wb").close()
    assert os.listdir(final) == ["done.pt"] and final.endswith(os.path.join("runs", "x"))


def test_output_dir_inside_a_run_is_all_or_nothing_and_stays_inside(workdir, tmp_path):
    ws = Workspace(workdir)
    run = workdir / "tiny"
    with ws.output_dir(run, "evaluation") as (tmp, final):
        open(os.path.join(tmp, "eval.json"), "w").close()
    with ws.output_dir(run, "evaluation") as (tmp, second):
        pass
    assert final == str(run / "evaluation") and second == str(run / "evaluation_1")
    before = sorted(os.listdir(run))
    with pytest.raises(RuntimeError):
        with ws.output_dir(run / "new", "evaluation") as (tmp, _):
            raise RuntimeError("cancelled")
    assert sorted(os.listdir(run)) == before  # neither the folder nor its new parent is left
    with pytest.raises(ConsoleError, match="outside the work directory"):
        with ws.output_dir(tmp_path, "x"):
            pass


def test_run_files_follow_the_layout_and_read_earlier_runs(workdir):
    from utils.console.sources import head_for
    from utils.console.workspace import RUN_BODY, RUN_REPORT, run_body, run_report
    from utils.layout import COMPRESSED_BODY, compression_report

    ws = Workspace(str(workdir))
    # the names tools/compress.py writes: the body and its report beside it
    assert (RUN_BODY, RUN_REPORT) == (COMPRESSED_BODY, os.path.basename(compression_report(COMPRESSED_BODY)))
    run = workdir / "runs" / "r"
    run.mkdir(parents=True)
    with pytest.raises(ConsoleError, match="holds no compressed model"):
        run_body(ws, "runs/r")
    (run / "compressed.pt").write_bytes(b"x")  # a run of an earlier console version
    assert (run_body(ws, "runs/r"), run_report(ws, "runs/r")) == ("runs/r/compressed.pt", "runs/r/compressed.json")
    (run / RUN_BODY).write_bytes(b"x")
    assert run_body(ws, "runs/r") == f"runs/r/{RUN_BODY}"
    # a compressed body keeps the exported head beside it; an exported body finds its own
    assert head_for(ws, f"runs/r/{RUN_BODY}") == ""
    (run / "model_headfx.pt").write_bytes(b"x")
    assert head_for(ws, f"runs/r/{RUN_BODY}") == "runs/r/model_headfx.pt"
    assert head_for(ws, "tiny/model_modelfx.pt") == "tiny/model_headfx.pt"
