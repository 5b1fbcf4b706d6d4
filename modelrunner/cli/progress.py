"""Live progress of a pull or push from the gateway's JSON-lines stream: a bar per layer and a total.

Each line is Docker Model Runner's progress message: `{"type": "progress"|"success"|"warning"|"error",
"message", "total", "layer": {"id", "size", "current"}, "mode", "current", "rate"}`.
"""

from __future__ import annotations

from collections.abc import Iterable

from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from rich.text import Text

from modelrunner.cli.client import CliError
from modelrunner.cli.output import err_console


class TransferView:
    """Turns progress messages into rich bars; returns the final "success" message."""

    def __init__(self, verb: str, progress: Progress) -> None:
        self.verb = verb
        self.progress = progress
        self.layers: dict[str, TaskID] = {}
        self.total_task: TaskID | None = None
        self.started = False

    def _add_task(self, description: str, total: float | None) -> TaskID:
        """A bar; the display starts with the first, so a transfer refused before any progress leaves no
        empty line above its error."""
        if not self.started:
            self.progress.start()
            self.started = True
        return self.progress.add_task(description, total=total)

    def stop(self) -> None:
        if self.started:
            self.progress.stop()

    def _total(self, total: float) -> TaskID:
        if self.total_task is None:
            self.total_task = self._add_task(f"{self.verb} total", total=total or None)
        return self.total_task

    def handle(self, message: dict) -> dict | None:
        kind = message.get("type", "progress")
        if kind == "error":
            raise CliError(message.get("message") or f"{self.verb.lower()} failed")
        if kind == "warning":
            self.progress.console.print(Text.assemble(("warning: ", "yellow"), message.get("message", "")), soft_wrap=True)
            return None
        if kind == "success":
            return message
        total = message.get("total") or 0
        if total:
            self._total(total)  # first, so the total bar sits above the layers'
        layer = message.get("layer") or {}
        if layer.get("id"):
            lid = layer["id"]
            if lid not in self.layers:
                label = lid.split(":", 1)[-1][:12]
                self.layers[lid] = self._add_task(f"  {label}", total=layer.get("size") or None)
            self.progress.update(self.layers[lid], completed=layer.get("current", 0), total=layer.get("size") or None)
        if total:
            task = self._total(total)
            current = message.get("current")
            if current is None:  # DMR sends no running total: sum the layers
                current = sum(self.progress.tasks[i].completed for i in self.layers.values())
            self.progress.update(task, completed=current, total=total)
        return None


def render(verb: str, messages: Iterable[dict], *, show_bars: bool = True) -> dict:
    """Shows `messages` live; returns the "success" message or raises CliError."""
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(binary_units=False),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=False,
        disable=not show_bars,
    )
    view = TransferView(verb, progress)
    try:
        for message in messages:
            done = view.handle(message)
            if done is not None:
                return done
    finally:
        view.stop()
    raise CliError(f"the gateway ended the {verb.lower()} stream without reporting success; run it again to resume")
