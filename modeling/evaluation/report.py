"""The human-readable side of ``metrics.json``: a short Markdown report and a bar chart of bits per byte per
group, written beside it (``metrics.md``, ``metrics-bpb.png`` for ``--output metrics.json``).

The JSON stays the record a program reads; the report is for a person comparing runs. The chart needs matplotlib
(installed with the project's dependencies); without it the report says so and the rest is written anyway.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

log = logging.getLogger("modeling.evaluate")

#: Columns of a breakdown table: (key in the group's dict, header).
GROUP_COLUMNS = (("bits_per_byte", "bpb"), ("perplexity", "ppl"), ("next_token_accuracy", "acc"),
                 ("tokens", "tokens"), ("bytes", "bytes"), ("docs", "docs"))


def report_paths(output: str | Path) -> tuple[Path, Path]:
    """Where the Markdown report and the chart go for a given metrics path."""
    out = Path(output)
    md = out.with_suffix(".md")
    if md == out:  # --output metrics.md: the JSON keeps that name, the report must not overwrite it
        md = out.with_name(f"{out.stem}-report.md")
    return md, out.with_name(f"{out.stem}-bpb.png")


def write_report(result: dict[str, Any], output: str | Path) -> list[Path]:
    """Write the Markdown report (and the chart when there are breakdowns); returns the paths written."""
    md_path, png_path = report_paths(output)
    breakdowns: dict[str, Any] = result.get("breakdowns") or {}
    written = [md_path]
    chart = None
    if breakdowns:
        chart = plot_breakdowns(breakdowns, png_path)
        if chart is not None:
            written.append(chart)
    md_path.write_text(markdown_report(result, chart), encoding="utf-8")
    return written


def markdown_report(result: dict[str, Any], chart: Path | None) -> str:
    """The report's text: the run, the metrics table, one table per breakdown."""
    run = result.get("run", {})
    lines = [f"# Evaluation of `{run.get('model', '?')}`", ""]
    lines += ["| metric | value |", "|---|---|"]
    lines += [f"| {k} | {_fmt(v)} |" for k, v in result.get("metrics", {}).items()]
    lm = result.get("details", {}).get("language_modeling")
    if lm:
        lines += ["", f"{lm['docs']} documents, {lm['tokens']} predicted tokens"
                  + (f", {lm['bytes']} bytes" if "bytes" in lm else "")
                  + f", blocks of {lm['block_size']} tokens ({lm['block_size_from']})."]
        if "bytes" in lm:
            lines += ["", "Bits per byte (bpb) does not depend on the tokenizer: compare it across models; compare "
                      "perplexity only between models that share a tokenizer."]
    for column, table in (result.get("breakdowns") or {}).items():
        groups = table["groups"]
        lines += ["", f"## By {column}", "",
                  f"{table['total_groups']} groups" + (", the largest by bytes first; the rest summed as "
                                                      "`(other)`" if any("groups" in g for g in groups) else "") + ".",
                  "", "| " + " | ".join([column] + [h for _, h in GROUP_COLUMNS]) + " |",
                  "|---" * (len(GROUP_COLUMNS) + 1) + "|"]
        lines += ["| " + " | ".join([_cell(g["group"])] + [_fmt(g[k]) for k, _ in GROUP_COLUMNS]) + " |"
                  for g in groups]
    if result.get("breakdowns"):
        lines += ["", f"![bits per byte per group]({chart.name})" if chart is not None else
                  "(No chart: matplotlib is not installed; `pip install matplotlib` draws one.)"]
    return "\n".join(lines) + "\n"


def plot_breakdowns(breakdowns: dict[str, Any], path: Path) -> Path | None:
    """Horizontal bars of bpb per group, one panel per breakdown column; None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only: no display on a cluster node
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("no bits-per-byte chart: matplotlib is not installed (pip install matplotlib)")
        return None
    panels = [(c, [g for g in t["groups"] if not math.isnan(g["bits_per_byte"])]) for c, t in breakdowns.items()]
    heights = [max(1.5, 0.3 * len(groups) + 0.8) for _, groups in panels]
    fig, axes = plt.subplots(len(panels), 1, figsize=(7, sum(heights)), squeeze=False,
                             gridspec_kw={"height_ratios": heights})
    for ax, (column, groups) in zip(axes[:, 0], panels, strict=True):
        names = [_short(g["group"]) for g in groups][::-1]
        values = [g["bits_per_byte"] for g in groups][::-1]
        ax.barh(names, values, color="tab:blue")
        for y, v in enumerate(values):
            ax.text(v, y, f" {v:.3f}", va="center", fontsize=8)
        ax.set_title(f"bits per byte by {column}", fontsize=10)
        ax.set_xlabel("bits per byte (lower is better)")
        ax.margins(x=0.15)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.4g}"
    return str(value)


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _short(text: str, width: int = 40) -> str:
    return text if len(text) <= width else "…" + text[-(width - 1):]

