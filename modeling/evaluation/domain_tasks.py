"""lm-evaluation-harness tasks made from held-out documents of the user's own domain, written as a task folder.

Public benchmarks (HellaSwag, LAMBADA) measure general English; a model trained on contracts or clinical notes
needs the same kind of test on its own text. Two tasks, built from documents the model never trained on
(curation's ``heldout/``):

- ``<name>_cloze``: LAMBADA-style last-word prediction. The context is a passage cut just before a word, the
  target is that word with its leading space (``" invoice"``); scored by log-likelihood as ``acc`` (the word is
  the model's greedy continuation) and ``perplexity`` of the target word;
- ``<name>_choice``: "which continuation is real". The passage's real next words against ``num_distractors``
  continuations cut from other held-out documents; ``acc`` and ``acc_norm`` (length-normalised), as HellaSwag.

Each task is a YAML plus its items as JSON Lines (lm-eval's local dataset support: ``dataset_path: json``), so
the folder also runs with the ``lm_eval`` command::

    lm_eval --model hf --model_args pretrained=runs/x/hf --tasks domain_cloze,domain_choice \
        --include_path out/domain-tasks

The YAMLs name their data files by absolute path: lm-eval hands ``data_files`` to ``datasets.load_dataset``,
which reads a relative path against the current directory, not the YAML's. After moving the folder, generate it
again (same documents and seed: the same items) or run :func:`relocate_tasks`.

Items are deterministic for the same documents, options and seed; each document's items depend only on the
document, the seed and the pool of continuations, never on the order other items were drawn in.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from common.errors import UserError
from common.files import InputError
from modeling.corpus import iter_text_batches, resolve_text_files
from modeling.heldout import heldout_inputs
from modeling.inference import derive_seed

log = logging.getLogger("modeling.evaluate")

#: Manifest of a generated task folder: options, sources and counts.
MANIFEST_NAME = "domain_tasks.json"


class DomainTaskError(UserError):
    """The domain tasks cannot be built from the given documents or options; the message says what to change."""


@dataclass(frozen=True)
class DomainTasksConfig:
    """How to turn held-out documents into the two lm-eval tasks: ``python -m modeling.harness tasks``."""

    data: tuple[str, ...]
    """Held-out documents: parquet / jsonl[.gz] / txt files, folders or globs. A curation output folder stands
    for its ``heldout/`` folder (its ``data/`` is what the model trained on, so it is refused)."""
    output: str
    """Task folder to write (YAMLs, JSON Lines items, ``domain_tasks.json``); pass it as ``include_path``."""
    name: str = "domain"
    """Prefix of the task names (``<name>_cloze``, ``<name>_choice``) and the tag that runs both."""
    text_column: str = "text"
    """Column holding the documents."""
    seed: int = 0
    """Seed of the distractor draw and the choice order: the same seed gives the same items."""
    max_docs: int | None = None
    """Read at most this many documents (in file order); None reads all."""
    min_context_words: int = 16
    """Fewest words before the cloze target or the choice continuation; shorter documents are skipped."""
    max_context_words: int = 128
    """Most words of context: a long document is cut after this many, so contexts fit small models."""
    continuation_words: int = 12
    """Words in each continuation of the choice task (the real one and each distractor)."""
    num_distractors: int = 3
    """Continuations from other documents offered next to the real one (HellaSwag offers 3)."""
    tasks: tuple[str, ...] = ("cloze", "choice")
    """Which of the two tasks to write."""

    def check(self) -> None:
        """Reject options that cannot make an item, naming the field to change."""
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", self.name):
            raise DomainTaskError(f"name {self.name!r}: use letters, digits and _, starting with a letter")
        if self.min_context_words < 1 or self.max_context_words < self.min_context_words:
            raise DomainTaskError(
                f"min_context_words must be >= 1 and max_context_words >= it, got {self.min_context_words} "
                f"and {self.max_context_words}"
            )
        if self.continuation_words < 1 or self.num_distractors < 1:
            raise DomainTaskError(
                f"continuation_words and num_distractors must be >= 1, got {self.continuation_words} and "
                f"{self.num_distractors}"
            )
        unknown = sorted(set(self.tasks) - {"cloze", "choice"})
        if unknown or not self.tasks:
            raise DomainTaskError(f"tasks {list(self.tasks)}: choose from cloze, choice")


@dataclass
class DomainTasks:
    """What :func:`write_domain_tasks` wrote: task names, item counts, and documents skipped with the reason."""

    folder: Path
    task_names: list[str]
    items: dict[str, int]
    """Items written per task name."""
    docs: int = 0
    """Documents read."""
    skipped: dict[str, Counter[str]] = field(default_factory=dict)
    """Per task name, documents that made no item, by reason."""


# ---------------------------------------------------------------------------------------- items
_WORD = re.compile(r"\S+")
_DRAWS_PER_DISTRACTOR = 50
_EDGE_PUNCT = "\"'“”‘’«»()[]{}<>.,;:!?…-–—*_"


def cloze_item(text: str, min_context: int, max_context: int) -> dict[str, str] | str:
    """A last-word item from the start of ``text``, or the reason there is none.

    The target is the last word of the first ``max_context + 1`` words with its surrounding punctuation removed
    (LAMBADA's targets are bare words); the context is the text before it as written (newlines kept), its
    trailing whitespace removed, so context + target is the document's text up to the word, except that the
    whitespace before the word becomes one space (and a leading quote stays at the end of the context).
    """
    words = list(_WORD.finditer(text))
    if len(words) < min_context + 1:
        return "too_short"
    end = min(len(words), max_context + 1)
    for index in range(end - 1, min_context - 1, -1):  # back off past tokens that are only punctuation
        word = words[index].group().strip(_EDGE_PUNCT)
        if any(ch.isalnum() for ch in word):
            start = words[index].start() + words[index].group().index(word)
            context = text[:start].rstrip()
            if context:
                return {"context": context, "target": " " + word}
    return "no_word_target"


def split_for_choice(text: str, min_context: int, max_context: int, length: int) -> tuple[str, str] | None:
    """(context, continuation): the text before a word boundary and the ``length`` words after it, or None when
    the document has fewer than ``min_context + length`` words. The continuation is single-spaced."""
    words = list(_WORD.finditer(text))
    if len(words) < min_context + length:
        return None
    cut = min(max_context, len(words) - length)
    context = text[: words[cut].start()].rstrip()
    return context, " ".join(w.group() for w in words[cut : cut + length])


def choice_items(
    splits: Sequence[tuple[str, str] | None], num_distractors: int, seed: int
) -> tuple[list[dict[str, Any]], Counter[str]]:
    """Multiple-choice items: each split's real continuation among distractors from other documents.

    Each item draws with its own generator (seed, item index), so one document more or less changes no other
    item's draw. A distractor equal to the real continuation or another choice is not used (repetitive corpora
    repeat phrases); an item that finds too few distinct ones in ``_DRAWS_PER_DISTRACTOR`` draws per distractor
    is skipped and counted.
    """
    pool = [(i, s[1]) for i, s in enumerate(splits) if s is not None]
    items: list[dict[str, Any]] = []
    skipped: Counter[str] = Counter()
    for index, split in enumerate(splits):
        if split is None:
            skipped["too_short"] += 1
            continue
        context, real = split
        rng = random.Random(derive_seed(seed, "choice", index))
        choices = [real]
        # draws with rejection, not a shuffle of the whole pool per item (quadratic in the documents)
        for _ in range(_DRAWS_PER_DISTRACTOR * num_distractors):
            doc, text = pool[rng.randrange(len(pool))]
            if doc != index and text not in choices:
                choices.append(text)
                if len(choices) == num_distractors + 1:
                    break
        if len(choices) < num_distractors + 1:
            skipped["too_few_distinct_distractors"] += 1
            continue
        rng.shuffle(choices)
        items.append({"context": context, "choices": choices, "label": choices.index(real), "doc": index})
    return items, skipped


# ---------------------------------------------------------------------------------------- writing
def resolve_heldout(inputs: Sequence[str], text_column: str = "text") -> list[Path]:
    """Files of the held-out documents. A curation output folder means its ``heldout/``; without one it is
    refused, because its ``data/`` is the training split and a test on it would flatter the model."""
    try:
        return resolve_text_files(heldout_inputs(inputs, "data"), text_column, "text_column")
    except InputError as err:
        raise DomainTaskError(str(err)) from err


def read_documents(cfg: DomainTasksConfig) -> tuple[list[str], list[Path]]:
    """The documents in file order (sorted files), at most ``max_docs``, and the files they came from."""
    files = resolve_heldout(cfg.data, cfg.text_column)
    docs = [t for batch in iter_text_batches(files, cfg.text_column, max_docs=cfg.max_docs) for t in batch]
    if not docs:
        raise DomainTaskError(f"no documents in column {cfg.text_column!r} of {[str(f) for f in files[:3]]}")
    return docs, files


def write_domain_tasks(cfg: DomainTasksConfig) -> DomainTasks:
    """Build the tasks from ``cfg.data`` and write them under ``cfg.output``; returns names and counts.

    Fails, naming the option to change, when a task would have no item: an empty task would report nothing
    and look like a pass.
    """
    cfg.check()
    docs, files = read_documents(cfg)
    out = Path(cfg.output).expanduser().absolute()
    out.mkdir(parents=True, exist_ok=True)
    result = DomainTasks(folder=out, task_names=[], items={}, docs=len(docs))
    if "cloze" in cfg.tasks:
        made = [cloze_item(t, cfg.min_context_words, cfg.max_context_words) for t in docs]
        rows = [{**m, "doc": i} for i, m in enumerate(made) if isinstance(m, dict)]
        _write_task(result, out, f"{cfg.name}_cloze", rows, Counter(m for m in made if isinstance(m, str)),
                    _cloze_yaml, cfg)
    if "choice" in cfg.tasks:
        splits = [
            split_for_choice(t, cfg.min_context_words, cfg.max_context_words, cfg.continuation_words)
            for t in docs
        ]
        rows, skipped = choice_items(splits, cfg.num_distractors, cfg.seed)
        _write_task(result, out, f"{cfg.name}_choice", rows, skipped, _choice_yaml, cfg)
    manifest = {
        "config": asdict(cfg),
        "sources": [str(f) for f in files],
        "docs": result.docs,
        "items": result.items,
        "skipped": {k: dict(v) for k, v in result.skipped.items()},
    }
    (out / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n")
    log.info("domain tasks in %s: %d docs -> %s; skipped %s", out, result.docs, result.items,
             manifest["skipped"])
    return result


def _write_task(result: DomainTasks, out: Path, task: str, rows: list[dict[str, Any]], skipped: Counter[str],
                make_yaml: Any, cfg: DomainTasksConfig) -> None:
    if not rows:
        raise DomainTaskError(
            f"{task}: none of the {result.docs} documents makes an item ({dict(skipped)}). Give more or longer "
            f"documents, or lower min_context_words ({cfg.min_context_words}) / continuation_words "
            f"({cfg.continuation_words})"
        )
    data = out / f"{task}.jsonl"
    with open(data, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    spec = {"tag": [cfg.name], "task": task, **_dataset(data), **make_yaml(cfg),
            "metadata": {"version": 1.0, "seed": cfg.seed}}
    (out / f"{task}.yaml").write_text(yaml.safe_dump(spec, sort_keys=False, allow_unicode=True))
    result.task_names.append(task)
    result.items[task] = len(rows)
    result.skipped[task] = skipped


def _dataset(data: Path) -> dict[str, Any]:
    """lm-eval's local JSON dataset: one ``test`` split read from ``data`` (absolute: see the module doc)."""
    return {"dataset_path": "json", "dataset_kwargs": {"data_files": {"test": str(data)}}, "test_split": "test"}


def _cloze_yaml(cfg: DomainTasksConfig) -> dict[str, Any]:
    """lambada_openai's scoring: log-likelihood of the target word, acc (greedy) and perplexity."""
    return {
        "output_type": "loglikelihood",
        "doc_to_text": "{{context}}",
        "doc_to_target": "{{target}}",
        "metric_list": [
            {"metric": "perplexity", "aggregation": "perplexity", "higher_is_better": False},
            {"metric": "acc", "aggregation": "mean", "higher_is_better": True},
        ],
    }


def _choice_yaml(cfg: DomainTasksConfig) -> dict[str, Any]:
    """hellaswag's scoring: the choice with the highest log-likelihood (acc) or per-byte log-likelihood
    (acc_norm); lm-eval puts its target_delimiter, a space, between the context and each choice."""
    return {
        "output_type": "multiple_choice",
        "doc_to_text": "{{context}}",
        "doc_to_choice": "choices",
        "doc_to_target": "label",
        "metric_list": [
            {"metric": "acc", "aggregation": "mean", "higher_is_better": True},
            {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True},
        ],
    }


def relocate_tasks(folder: str | os.PathLike[str]) -> list[Path]:
    """Point every task YAML in ``folder`` at the data files next to it (after the folder was moved or copied
    to another machine); returns the YAMLs rewritten."""
    root = Path(folder).expanduser().absolute()
    changed = []
    for spec_path in sorted(root.glob("*.yaml")):
        spec = yaml.safe_load(spec_path.read_text())
        files = (spec or {}).get("dataset_kwargs", {}).get("data_files", {})
        if not isinstance(files, dict) or not files:
            continue
        spec["dataset_kwargs"]["data_files"] = {k: str(root / Path(v).name) for k, v in files.items()}
        spec_path.write_text(yaml.safe_dump(spec, sort_keys=False, allow_unicode=True))
        changed.append(spec_path)
    return changed
