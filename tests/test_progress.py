"""Progress: a bar on a terminal, periodic plain lines in a log (SLURM, pipes)."""

from __future__ import annotations

import io
import time

import pytest

from rwsjax.report import progress


def test_log_lines_when_not_a_terminal(monkeypatch):
    monkeypatch.setenv(progress.INTERVAL_ENV, "0.2")
    log = io.StringIO()
    b = progress.bar(total=40, desc="at 1/2", stream=log)
    for i in range(40):  # 40 updates in ~0.4 s: at most a few lines, not one per update
        time.sleep(0.01)
        b.update(1)
        b.set_postfix(loss=f"{i:.3f}", refresh=False)
    b.close()
    text = log.getvalue()
    lines = text.splitlines()
    assert "\r" not in text and text.endswith("\n")
    assert 1 <= len(lines) <= 6, lines
    assert all(line.startswith("at 1/2: ") for line in lines)
    assert lines[0].startswith("at 1/2: 0/40 [")
    # A bar opened inside another (OOD sets → their evaluation batches) writes plain lines too.
    log = io.StringIO()
    for _ in progress.bar(range(2), desc="OOD", stream=log):
        for _ in progress.bar(range(2), desc="fog-1", stream=log):
            pass
    assert "\x1b" not in log.getvalue() and "fog-1: 0/2" in log.getvalue()


def test_disabled_bar_writes_nothing_and_bad_interval_is_named(monkeypatch):
    log = io.StringIO()
    assert list(progress.bar(range(3), desc="x", stream=log, enabled=False)) == [0, 1, 2]
    assert log.getvalue() == ""
    monkeypatch.setenv(progress.INTERVAL_ENV, "soon")
    with pytest.raises(ValueError, match="RWSJAX_PROGRESS_INTERVAL='soon' must be a positive number"):
        progress.bar(total=1, stream=log)
