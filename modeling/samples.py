"""The files of ``modeling.generate``: the prompts it reads, the samples it writes (JSONL) and the Markdown
report a person reviews, least confident samples first."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from modeling.corpus import iter_json_lines, open_text
from modeling.inference import GenerateError, Sample

REPO = Path(__file__).resolve().parents[1]
#: The prompts file used when ``--prompts`` is not given.
DEFAULT_PROMPTS = REPO / "configs" / "generate" / "prompts.txt"


def read_prompts(path: str | Path, field: str = "prompt") -> list[str]:
    """Prompts from ``.txt`` (one a line, blank lines skipped) or ``.jsonl`` (``field`` of each row)."""
    p = Path(path)
    if not p.is_file():
        raise GenerateError(
            f"--prompts {str(path)!r}: no such file. Give a .txt file (one prompt per line) or a "
            f".jsonl file with a {field!r} field; {DEFAULT_PROMPTS.relative_to(REPO)} is an example"
        )
    name = p.name.lower().removesuffix(".gz")
    prompts: list[str] = []
    if name.endswith(".txt"):
        with open_text(p) as fh:
            prompts = [line.rstrip("\r\n") for line in fh if line.strip()]
    elif name.endswith((".jsonl", ".json")):
        for n, row in iter_json_lines(p, GenerateError):
            value = row.get(field) if isinstance(row, dict) else None
            if not isinstance(value, str) or not value:
                keys = list(row) if isinstance(row, dict) else type(row).__name__
                raise GenerateError(
                    f"{p}:{n}: no non-empty string field {field!r} (the row has {keys}); "
                    "pass the right one with --prompt-field"
                )
            prompts.append(value)
    else:
        raise GenerateError(f"--prompts {p}: unknown file type; use .txt (one prompt per line) or .jsonl")
    if not prompts:
        raise GenerateError(f"--prompts {p} holds no prompts")
    return prompts


def write_jsonl(samples: Sequence[Sample], path: str | Path) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", encoding="utf-8") as fh:
        for s in samples:
            fh.write(json.dumps(asdict(s), ensure_ascii=False) + "\n")
    return out


def _fence(text: str) -> str:
    """A code fence longer than any backtick run in ``text``, so model output cannot break out of it."""
    longest, run = 0, 0
    for ch in text:
        run = run + 1 if ch == "`" else 0
        longest = max(longest, run)
    return "`" * max(3, longest + 1)


def render_report(samples: Sequence[Sample], title: str, header: Sequence[str] = ()) -> str:
    """Markdown for a person to skim: a per-setting summary, then every sample, least confident first."""
    lines = [
        f"# Samples: {title}",
        "",
        *header,
        "",
        "Sorted by the mean log-probability of the generated tokens, lowest first: the samples the model was "
        "least sure of, where errors cluster, come first. Log-probabilities are the model's own (before "
        "temperature, top-p and top-k), so settings compare.",
        "",
        "| setting | samples | mean log-prob | mean tokens | ended with eos |",
        "|---|---:|---:|---:|---:|",
    ]
    by_setting: dict[str, list[Sample]] = {}
    for s in samples:
        by_setting.setdefault(s.setting, []).append(s)
    for name, group in by_setting.items():
        lines.append(
            f"| {name} | {len(group)} | {sum(s.mean_logprob for s in group) / len(group):.3f} | "
            f"{sum(s.num_tokens for s in group) / len(group):.1f} | "
            f"{sum(s.finish == 'eos' for s in group)}/{len(group)} |"
        )
    ranked = sorted(samples, key=lambda s: (s.mean_logprob, s.setting, s.prompt, s.sample))
    for rank, s in enumerate(ranked, 1):
        fence = _fence(s.output)
        lines += [
            "",
            f"## {rank}. {s.mean_logprob:.3f} · {s.setting} #{s.sample} · {s.num_tokens} tokens · "
            f"ended by {s.finish}",
            "",
            *(f"> {line}" for line in s.prompt.splitlines()),
            "",
            fence + "text",
            s.output,
            fence,
        ]
    return "\n".join(lines) + "\n"

