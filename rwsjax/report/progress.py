"""Progress for long loops: a tqdm bar on a terminal, periodic log lines elsewhere (SLURM logs, pipes, files).

On a terminal a bar redraws itself in place with ``\\r``; in a log file every redraw would be a line of its
own run together with carriage returns.  When stderr is not a terminal, :func:`bar` keeps tqdm's
bookkeeping (rate, elapsed time, ETA) but writes one plain line at most every
``$RWSJAX_PROGRESS_INTERVAL`` seconds (default 60), e.g.::

    at 3/110: 128/390 [02:01<04:08, 1.06it/s, acc=41.2, loss=1.734]

``TQDM_DISABLE=1`` turns every bar and line off (tqdm's own switch).
"""

from __future__ import annotations

import os
import re
import sys
from typing import Iterable

from tqdm.auto import tqdm

INTERVAL_ENV = "RWSJAX_PROGRESS_INTERVAL"
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class _Lines:
    """A file for tqdm that turns each redraw into one newline-terminated line (blank redraws dropped)."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, s: str) -> None:
        s = _ANSI.sub("", s).replace("\r", "").strip("\n")  # cursor moves of nested bars: not in a log
        if s.strip():
            self.stream.write(s.rstrip() + "\n")

    def flush(self) -> None:
        self.stream.flush()


def interval() -> float:
    """Seconds between log lines when stderr is not a terminal (``$RWSJAX_PROGRESS_INTERVAL``, default 60).

    Raises:
      ValueError: the variable is not a positive number (names it).
    """
    value = os.environ.get(INTERVAL_ENV, "60")
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise ValueError(f"{INTERVAL_ENV}={value!r} must be a positive number of seconds, e.g. 30")
    return seconds


def bar(iterable: Iterable | None = None, *, total: int | None = None, desc: str = "", initial: int = 0,
        unit: str = "it", unit_scale: bool = False, enabled: bool = True, stream=None) -> tqdm:
    """A progress bar over ``iterable`` (or updated by hand, ``total`` steps), as :class:`tqdm.tqdm`.

    Args:
      iterable, total, desc, initial, unit, unit_scale: as tqdm's.
      enabled: False gives a silent bar (the loop still runs through it).
      stream: where to write (default ``sys.stderr``); a terminal gets a bar, anything else log lines.
    """
    stream = sys.stderr if stream is None else stream
    if not enabled:
        return tqdm(iterable, total=total, disable=True)
    if getattr(stream, "isatty", lambda: False)():
        return tqdm(iterable, total=total, desc=desc, initial=initial, unit=unit, unit_scale=unit_scale, leave=False,
                    file=stream)
    return tqdm(iterable, total=total, desc=desc, initial=initial, unit=unit, unit_scale=unit_scale, leave=False,
                file=_Lines(stream),
                mininterval=interval(), maxinterval=float("inf"), ascii=True, position=0,
                bar_format="{desc}: {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}{postfix}]")
