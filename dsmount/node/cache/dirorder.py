"""Directory order: guessing, without a hint, that one reader opens the files of a directory in
its listing order (`tar`, `cp -r`, `rsync`, an unshuffled loader), and how far ahead to fetch.
Pure: no I/O, no trio (the caller passes the time and the listing).

One `Streak` per (reader, directory): where in the listing's files the reader last opened one,
how many opens in a row were the next file, and how far ahead (in files) fetches were asked
for. The first `start_after` successors in a row start a guess with `initial` files ahead; each
further right guess doubles the window up to `maximum`; the first wrong one (any file but the
next one) ends the guess: every file asked for and not opened is abandoned, and the streak
starts over from the file just opened.

Invariants:
- A wrong guess costs at most the window: files asked for beyond the position never exceed
  the window in force, and all of them are handed back as abandoned on the first wrong open.
- Nothing is asked for until `start_after` successors in a row: a random reader whose opens
  happen to be neighbours now and then costs nothing.
- Memory is bounded: at most `max_streaks` streaks, the least recently used forgotten first,
  and a streak idle for `idle_after` seconds is dropped (its files abandoned).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class DirOrderConfig:
    #: Successive opens in listing order before anything is fetched ahead: two, so a reader
    #: that opened two neighbours by chance fetches nothing.
    start_after: int = 2
    #: Files ahead once a guess starts: enough to hide one request's latency behind the reads
    #: of the files before it.
    initial: int = 4
    #: Files ahead at most (the caller also bounds the bytes): 64 x 100 KiB files behind 20 ms
    #: each keep 16 GETs in flight.
    maximum: int = 64
    #: A reader that opened nothing here for this long has gone: its guess is abandoned.
    idle_after: float = 30.0
    #: Streaks remembered at most.
    max_streaks: int = 256


@dataclass
class Streak:
    names: tuple[str, ...]  # the directory's files, in listing order
    position: int  # index of the file opened last
    run: int = 0  # successive opens that were the next file
    window: int = 0  # files ahead asked for at most now (0: no guess)
    asked: int = 0  # files up to (not including) this index were asked for
    touched: float = 0.0


@dataclass
class Decision:
    """What to do after an open: files to fetch now, and files asked for that will not be
    read after all (the guess was wrong, or the reader went idle)."""

    fetch: list[str] = field(default_factory=list)
    abandon: list[str] = field(default_factory=list)
    hit: bool = False  # the file opened had been asked for by this guess


class DirOrder:
    """The streaks of every reader (see the module docstring)."""

    def __init__(self, config: DirOrderConfig | None = None) -> None:
        self.config = config or DirOrderConfig()
        self._streaks: OrderedDict[Hashable, Streak] = OrderedDict()

    def __len__(self) -> int:
        return len(self._streaks)

    def opened(self, key: Hashable, names: tuple[str, ...], index: int, now: float
               ) -> Decision:
        """A reader (`key` names the reader and the directory) opened `names[index]`; `names`
        are the directory's files in listing order (pass the same tuple while the listing is
        the same: it is compared by identity first)."""
        cfg = self.config
        out = Decision()
        streak = self._streaks.get(key)
        if streak is not None and (now - streak.touched > cfg.idle_after
                                   or (streak.names is not names and streak.names != names)):
            out.abandon += self._unread(self._streaks.pop(key))  # idle, or the listing changed
            streak = None
        if not 0 <= index < len(names):
            raise IndexError(f"index {index} is not in a listing of {len(names)} files")
        if streak is None:
            self._remember(key, Streak(names, index, touched=now), out)
            return out
        streak.touched = now
        self._streaks.move_to_end(key)
        if index == streak.position + 1:
            out.hit = streak.window > 0 and index < streak.asked
            streak.position = index
            streak.run += 1
            if streak.run >= cfg.start_after:
                streak.window = (cfg.initial if streak.window == 0
                                 else min(cfg.maximum, 2 * streak.window))
                end = min(len(streak.names), index + 1 + streak.window)
                start = max(streak.asked, index + 1)
                out.fetch = list(streak.names[start:end])
                streak.asked = max(streak.asked, end)
            return out
        # Wrong: the guess ends, and what it asked for beyond this open is abandoned.
        out.abandon += [n for i, n in enumerate(streak.names[:streak.asked])
                        if i > streak.position and i != index]
        self._streaks[key] = Streak(streak.names, index, touched=now)
        return out

    def forget(self, key: Hashable) -> list[str]:
        """Drop a reader's streak; the files it asked for and nobody opened."""
        streak = self._streaks.pop(key, None)
        return [] if streak is None else self._unread(streak)

    def expire(self, now: float) -> list[str]:
        """Drop idle streaks; the files they asked for and nobody opened."""
        out: list[str] = []
        for key in [k for k, s in self._streaks.items()
                    if now - s.touched > self.config.idle_after]:
            out += self._unread(self._streaks.pop(key))
        return out

    def _remember(self, key: Hashable, streak: Streak, out: Decision) -> None:
        self._streaks[key] = streak
        self._streaks.move_to_end(key)
        while len(self._streaks) > self.config.max_streaks:
            _, old = self._streaks.popitem(last=False)
            out.abandon += self._unread(old)

    @staticmethod
    def _unread(streak: Streak) -> list[str]:
        return list(streak.names[streak.position + 1:streak.asked])
