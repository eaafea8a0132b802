"""Atomic writes and output checks: a full disk, a file in the way, a folder where a file goes."""
import errno
import os
import subprocess
import sys
import uuid

import pytest
import torch

from utils.cli import EXIT_USER_ERROR, describe_os_error, run_main
from utils.errors import OutputError
from utils.io import atomic_save, atomic_write_text, check_writable, made_dirs


@pytest.fixture
def full_disk(tmp_path):
    """A 256 KiB tmpfs filled to the last byte (we may mount as root); skipped where mounting is refused."""
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)],
                              capture_output=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        pytest.skip("cannot run mount here")
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode(errors='replace').strip()}")
    try:
        fd = os.open(mount / "filler", os.O_WRONLY | os.O_CREAT)
        try:
            while True:
                os.write(fd, b"\0" * 4096)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
        finally:
            os.close(fd)
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True, timeout=20)


def test_full_disk_names_the_file_and_leaves_no_temp_file(full_disk):
    target = full_disk / "checkpoint.pth.tar"
    with pytest.raises(OSError) as info:
        atomic_save({"w": torch.zeros(4096)}, target)
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(target)
    assert "disk is full" in describe_os_error(info.value)
    assert sorted(os.listdir(full_disk)) == ["filler"]


def test_full_disk_through_a_cli(full_disk, repo_root, tmp_path):
    """make_lists writes its lists onto the full tmpfs: one line, exit 2, no traceback, no temp file."""
    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for i in range(3):
        (root / "images" / f"a{i}.png").write_bytes(b"x")
        (root / "labels" / f"a{i}.png").write_bytes(b"x")
    out = full_disk / "lists"
    run = subprocess.run([sys.executable, "tools/make_lists.py", "--root", str(root), "--out", str(out)],
                         cwd=repo_root, capture_output=True, text=True, timeout=120)
    assert run.returncode == EXIT_USER_ERROR, run.stderr
    assert "Traceback" not in run.stderr
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and str(out) in last and "disk is full" in last
    assert not any(name.endswith(".tmp") for name in os.listdir(out)) if out.exists() else True


def test_file_in_the_way_and_folder_for_a_file(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutputError, match=f"--json {tmp_path}.* is a directory"):
        check_writable(tmp_path, "--json")
    with pytest.raises(OutputError, match=f"{blocker} is a file, not a folder"):
        check_writable(blocker / "sub" / "out.json", "--json")
    with pytest.raises(OutputError, match="OUTPUT_DIR .*is a file, not a folder"):
        check_writable(blocker, "OUTPUT_DIR", is_dir=True)
    with pytest.raises(NotADirectoryError) as info:
        atomic_write_text("x", blocker / "sub" / "out.json")
    assert info.value.filename == str(blocker / "sub" / "out.json")
    check_writable(tmp_path / "new" / "deeper" / "out.json", "--json")
    assert not (tmp_path / "new").exists()  # a check creates nothing


def test_made_dirs_removes_only_what_it_created_and_left_empty(tmp_path):
    with pytest.raises(RuntimeError):
        with made_dirs(tmp_path / "a" / "b" / "c"):
            raise RuntimeError("failed before writing")
    assert not (tmp_path / "a").exists()
    with pytest.raises(RuntimeError):
        with made_dirs(tmp_path / "x" / "y") as path:
            open(os.path.join(path, "kept.log"), "w").close()
            raise RuntimeError("failed after writing")
    assert (tmp_path / "x" / "y" / "kept.log").exists()


@pytest.mark.parametrize("code, fix", [(errno.ENOTDIR, "not a folder"), (errno.EISDIR, "give a file name"),
                                       (errno.ENOSPC, "disk is full"), (errno.EROFS, "read-only"),
                                       (errno.EIO, "I/O error"), (errno.ELOOP, "check the path")])
def test_run_main_turns_any_os_error_into_one_line(capsys, code, fix):
    path = f"/some/where/{uuid.uuid4().hex}.pt"

    def main(args):
        raise OSError(code, os.strerror(code), path)

    assert run_main(main, None) == EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: {path}: {os.strerror(code)}; ") and fix in err


def test_os_error_re_raised_by_a_dataloader_worker_is_one_line(capsys):
    text = ("Caught OSError in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n"
            '  File "x.py", line 1, in f\n    cv2.imwrite(...)\n'
            "OSError: could not encode a PNG for out/a.png")

    def main(args):
        raise OSError(text)

    assert run_main(main, None) == EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert err == "error: could not encode a PNG for out/a.png; check the path and the storage it is on\n"
