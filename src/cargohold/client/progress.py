"""Progress of blob transfers: rich bars on a terminal, nothing otherwise.

The library reports through a `Reporter`; the CLI picks `RichReporter` when stderr is a terminal
and neither `--quiet` nor `--json` was given.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID


class Tracker(Protocol):
    def advance(self, count: int) -> None: ...
    def reset(self, completed: int) -> None: ...
    def done(self, how: str) -> None: ...


class Reporter(Protocol):
    def blob(self, label: str, total: int) -> Tracker: ...
    def note(self, text: str) -> None: ...
    def close(self) -> None: ...


class _NullTracker:
    def advance(self, count: int) -> None:
        pass

    def reset(self, completed: int) -> None:
        pass

    def done(self, how: str) -> None:
        pass


class NullReporter:
    """Reports nothing (library default, `--quiet`, `--json`)."""

    def blob(self, label: str, total: int) -> Tracker:
        return _NullTracker()

    def note(self, text: str) -> None:
        pass

    def close(self) -> None:
        pass


class _RichTracker:
    def __init__(self, progress: Progress, task: TaskID, label: str) -> None:
        self.progress, self.task, self.label = progress, task, label

    def advance(self, count: int) -> None:
        self.progress.advance(self.task, count)

    def reset(self, completed: int) -> None:
        self.progress.update(self.task, completed=completed)

    def done(self, how: str) -> None:
        total = self.progress.tasks[self.task].total if self.task < len(self.progress.tasks) else None
        self.progress.update(self.task, completed=total, description=f"{self.label} {how}")


class RichReporter:
    """One bar per blob on stderr."""

    def __init__(self, console: Any = None) -> None:
        # imported here: rich costs a tenth of a second at start-up, and only a terminal needs it
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=console or Console(stderr=True),
            transient=False,
        )
        self.progress.start()

    def blob(self, label: str, total: int) -> Tracker:
        return _RichTracker(self.progress, self.progress.add_task(label, total=total), label)

    def note(self, text: str) -> None:
        self.progress.console.print(text)

    def close(self) -> None:
        self.progress.stop()
