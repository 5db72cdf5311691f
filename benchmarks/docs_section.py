"""The opening lines every benchmark section of docs/benchmarks.md shares: a title, when, and the command to rerun."""

from __future__ import annotations


def section_opening(title: str, date: str, command: str) -> list[str]:
    """``### title``, ``Measured <date> with`` and the command in a bash block; the caller goes on with ``on ...``."""
    return [f"### {title}", "", f"Measured {date} with", "", "```bash", command, "```", ""]
