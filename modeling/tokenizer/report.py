"""How tokenizers split text and how well they compress it: the figures training records and ``inspect`` shows."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tokenizers import Tokenizer

from common.files import InputError
from modeling.corpus import iter_text_batches, resolve_text_files
from modeling.tokenizer.load import load_tokenizer


def measure_compression(
    tok: Tokenizer, texts: Sequence[str], unk_id: int | None = None, batch_size: int = 256
) -> dict[str, Any]:
    """Characters per token, tokens per whitespace-separated word and unknown-token rate on ``texts``.

    Special tokens a post-processor would add are left out, so tokenizers with and without bos/eos compare
    fairly. Higher chars/token and lower tokens/word mean more text fits in the same context.
    """
    n_chars = n_tokens = n_words = n_unk = 0
    for i in range(0, len(texts), batch_size):
        chunk = list(texts[i : i + batch_size])
        for text, enc in zip(chunk, tok.encode_batch(chunk, add_special_tokens=False)):
            n_chars += len(text)
            n_words += len(text.split())
            n_tokens += len(enc.ids)
            if unk_id is not None:
                n_unk += enc.ids.count(unk_id)
    return {
        "docs": len(texts),
        "chars": n_chars,
        "tokens": n_tokens,
        "chars_per_token": round(n_chars / n_tokens, 4) if n_tokens else None,
        "tokens_per_word": round(n_tokens / n_words, 4) if n_words else None,
        "unk_rate": round(n_unk / n_tokens, 6) if n_tokens else None,
    }


def inspect_tokenizers(
    paths: Sequence[str],
    texts: Sequence[str] = (),
    eval_inputs: Sequence[str] | None = None,
    text_column: str = "text",
    max_docs: int = 1000,
) -> dict[str, Any]:
    """How each tokenizer splits ``texts`` and, on the same ``eval_inputs`` documents, how well it compresses."""
    eval_texts: list[str] = []
    if eval_inputs:
        files = resolve_text_files(eval_inputs, text_column=text_column)
        for batch in iter_text_batches(files, text_column, max_docs=max_docs):
            eval_texts.extend(batch)
        if not eval_texts:
            raise InputError(f"--eval {list(eval_inputs)} holds no non-empty text in column {text_column!r}")
    report: dict[str, Any] = {"eval_docs": len(eval_texts), "tokenizers": []}
    for path in paths:
        # local directories and bare tokenizer.json files; a general tokenizer without eos is fine to inspect
        hf = load_tokenizer(path, "--tokenizer", require_eos=False, hub=False, json_file=True)
        entry: dict[str, Any] = {
            "path": str(path),
            "vocab_size": len(hf),
            "special_tokens": {
                name: {"token": getattr(hf, name), "id": getattr(hf, f"{name}_id")}
                for name in ("unk_token", "bos_token", "eos_token", "pad_token")
                if getattr(hf, name) is not None
            },
            "texts": [
                {"text": text, "tokens": pieces, "n_tokens": len(pieces)}
                for text, pieces in ((text, hf.tokenize(text)) for text in texts)
            ],
        }
        if eval_texts:
            entry["eval"] = measure_compression(hf.backend_tokenizer, eval_texts, hf.unk_token_id)
        report["tokenizers"].append(entry)
    return report


def format_inspect_report(report: dict[str, Any]) -> str:
    """Human-readable view of :func:`inspect_tokenizers` output: one block per text, one table for eval."""
    lines: list[str] = []
    toks = report["tokenizers"]
    for entry in toks:
        specials = ", ".join(f"{v['token']}={v['id']}" for v in entry["special_tokens"].values())
        lines.append(f"{entry['path']}: vocab {entry['vocab_size']}; special tokens {specials or '(none)'}")
    for i, sample in enumerate(toks[0]["texts"] if toks else []):
        lines.append(f"\ntext: {sample['text']!r}")
        for entry in toks:
            item = entry["texts"][i]
            lines.append(f"  {item['n_tokens']:4d} tokens  {entry['path']}: {item['tokens']}")
    if report["eval_docs"]:
        lines.append(f"\ncompression on {report['eval_docs']} held-out documents (higher chars/token is better):")
        lines.append(f"  {'chars/token':>11}  {'tokens/word':>11}  {'unk rate':>8}  tokenizer")
        for entry in toks:
            ev = entry["eval"]
            lines.append(
                f"  {ev['chars_per_token'] or 0:11.3f}  {ev['tokens_per_word'] or 0:11.3f}  "
                f"{ev['unk_rate'] or 0:8.4f}  {entry['path']}"
            )
    return "\n".join(lines)

