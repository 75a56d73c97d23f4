"""Progress of long work (``invad check``, ``invad bench``, ``benchmarks/run_all.py``).

On a terminal, one line redrawn in place: a bar, the count and what runs now.
Elsewhere (CI logs, pipes), a plain line every ``interval`` seconds and one at
the end, so a log shows that something is happening without hundreds of lines.
It writes to stderr, so that what a command prints on stdout stays parseable.
No dependency: rich and tqdm would add an install for one line of output.
"""

from __future__ import annotations

import os
import shutil
import sys
import threading
import time
from types import TracebackType
from typing import TextIO

#: Shorter work than this gets no closing line in plain mode: it felt instant.
QUIET_BELOW = 2.0


def is_terminal(stream: TextIO) -> bool:
    """Whether ``stream`` is an interactive terminal that understands ``\\r``."""
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty()) and os.environ.get("TERM") != "dumb"


def duration(seconds: float) -> str:
    """``0.4 s``, ``12 s``, ``1 min 44 s``."""
    if seconds < 10:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest} s" if minutes else f"{rest} s"


class Progress:
    """``done`` out of ``total`` steps of ``label``, shown on ``stream`` (default stderr).

    Use as a context manager, or call :meth:`close`. ``enabled=False`` shows
    nothing. ``bar`` forces (``True``) or forbids (``False``) the in-place bar;
    by default it is drawn on a terminal only. ``tick=True`` also redraws once a
    second from a background thread, for steps that each take long (a
    benchmark script): the clock then moves between updates.
    """

    def __init__(
        self,
        label: str,
        total: int = 0,
        *,
        stream: TextIO | None = None,
        enabled: bool = True,
        bar: bool | None = None,
        interval: float = 10.0,
        tick: bool = False,
    ) -> None:
        self.label = label
        self.total = total
        self.done = 0
        self.stream = sys.stderr if stream is None else stream
        self.enabled = enabled
        self.bar = is_terminal(self.stream) if bar is None else bar
        self.interval = interval
        self.start = time.monotonic()
        self._shown = self.start - 1.0  # the first update is drawn at once
        self._drawn = False  # a bar is on screen and must be cleared
        self._lines = 0  # plain lines written
        self._what = ""
        self._lock = threading.Lock()  # the ticker and the caller both draw
        self._stop = threading.Event()
        self._ticker = None
        if tick and enabled:
            self._ticker = threading.Thread(target=self._tick, daemon=True)
            self._ticker.start()

    def update(self, done: int, total: int | None = None, what: str | None = None) -> None:
        """``done`` steps are finished (of ``total``, if it changed); ``what`` runs now."""
        if not self.enabled:
            self.done = done
            return
        with self._lock:
            self._update(done, total, what)

    def _update(self, done: int, total: int | None, what: str | None) -> None:
        self.done = done
        if total is not None:
            self.total = total
        if what is not None:
            self._what = what
        what = self._what
        now = time.monotonic()
        if self.bar:
            if now - self._shown >= 0.1 or done >= self.total:
                self._draw(now, what)
        elif (
            (not self.total or done < self.total)  # the end gets close()'s line instead
            and now - self.start >= self.interval
            and now - self._shown >= self.interval
        ):
            self._line(now, what)

    def advance(self, steps: int = 1, what: str | None = None) -> None:
        self.update(self.done + steps, what=what)

    def _tick(self) -> None:
        while not self._stop.wait(1.0):
            self.update(self.done)

    def close(self) -> None:
        """Clear the bar; in plain mode, say how long it took (work of two seconds and more)."""
        if not self.enabled:
            return
        if self._ticker is not None:
            self._stop.set()
            self._ticker.join()
        elapsed = time.monotonic() - self.start
        if self._drawn:
            width = shutil.get_terminal_size().columns
            self.stream.write("\r" + " " * (width - 1) + "\r")
            self.stream.flush()
            self._drawn = False
        elif not self.bar and (self._lines or elapsed >= QUIET_BELOW):
            self.stream.write(f"{self.label}: {self._count()} done in {duration(elapsed)}\n")
            self.stream.flush()

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # -- drawing ------------------------------------------------------------------

    def _count(self) -> str:
        return f"{self.done}/{self.total}" if self.total else str(self.done)

    def _fraction(self) -> float:
        return min(self.done / self.total, 1.0) if self.total else 0.0

    def _draw(self, now: float, what: str) -> None:
        width = shutil.get_terminal_size().columns - 1
        cells = 20
        full = round(self._fraction() * cells)
        text = (
            f"{self.label} [{'#' * full}{'.' * (cells - full)}] "
            f"{self._fraction():4.0%} {self._count()} {duration(now - self.start)}"
            + (f"  {what}" if what else "")
        )
        self.stream.write("\r" + text[:width].ljust(width))
        self.stream.flush()
        self._shown, self._drawn = now, True

    def _line(self, now: float, what: str) -> None:
        elapsed = duration(now - self.start)
        text = f"{self.label}: {self._count()} ({self._fraction():.0%}) after {elapsed}"
        self.stream.write(text + (f", now {what}" if what else "") + "\n")
        self.stream.flush()
        self._shown = now
        self._lines += 1
