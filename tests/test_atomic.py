"""Atomic artifact writes: all or nothing, and readable like a plain write (not mkstemp's private 0600)."""

import os
import stat

import pytest

from rwsjax.atomic import atomic_path
from rwsjax.report.writers import write_json


def test_written_files_get_the_umask_permissions_of_a_plain_open(tmp_path):
    old = os.umask(0o022)
    try:
        write_json(str(tmp_path / "sub" / "r.json"), {"a": 1})
        with open(tmp_path / "plain", "w"):
            pass
    finally:
        os.umask(old)
    mode = stat.S_IMODE(os.stat(tmp_path / "sub" / "r.json").st_mode)
    assert mode == stat.S_IMODE(os.stat(tmp_path / "plain").st_mode) == 0o644


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "r.txt"
    path.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(str(path)) as tmp, open(tmp, "w") as f:
            f.write("half")
            raise RuntimeError("killed")
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["r.txt"]
