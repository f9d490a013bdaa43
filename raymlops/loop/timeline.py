"""The demo's timeline: one row per event (month, event, why / numbers), printed as a table at the end."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field

__all__ = ["Timeline"]


@dataclass
class Timeline:
    rows: list[tuple[str, str, str]] = field(default_factory=list)

    def add(self, month: str, event: str, detail: str) -> None:
        self.rows.append((month, event, detail))

    def render(self, width: int = 120) -> str:
        month_w = max([len(r[0]) for r in self.rows] + [5])
        event_w = max([len(r[1]) for r in self.rows] + [5])
        detail_w = max(40, width - month_w - event_w - 4)
        lines = [f"{'month':<{month_w}}  {'event':<{event_w}}  why / numbers", "-" * width]
        for month, event, detail in self.rows:
            wrapped = textwrap.wrap(detail, detail_w) or [""]
            lines.append(f"{month:<{month_w}}  {event:<{event_w}}  {wrapped[0]}")
            lines += [f"{'':<{month_w}}  {'':<{event_w}}  {more}" for more in wrapped[1:]]
        return "\n".join(lines)
