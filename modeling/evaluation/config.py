"""What one ``python -m modeling.evaluate`` run is asked for, and the error it reports when that cannot work."""

from __future__ import annotations

from dataclasses import dataclass

from common.errors import UserError

#: Metrics computed from the model's next-token predictions on documents.
LM_METRICS = ("perplexity", "next_token_accuracy", "bits_per_byte")
#: Metrics comparing generated continuations of prompts with references.
TASK_METRICS = ("accuracy", "f1", "bleu", "rouge")


class EvaluateError(UserError):
    """Evaluation cannot run with the given data or options. The message names the flag or file to fix."""


@dataclass(frozen=True)
class EvaluateConfig:
    """Everything one ``python -m modeling.evaluate`` run needs; the flags map one to one."""

    model: str
    """A Lightning ``.ckpt``, a Hugging Face model directory or a PEFT adapter directory."""
    data: tuple[str, ...]
    """Held-out files, directories or globs (parquet, jsonl[.gz]; txt for documents only)."""
    metrics: tuple[str, ...] | None = None
    """Subset of LM_METRICS + TASK_METRICS; None computes all that the data's columns allow."""
    text_column: str = "text"
    """Column holding the documents for perplexity and next-token accuracy."""
    prompt_column: str = "prompt"
    """Column holding the prompts the model continues for the task metrics."""
    references_column: str = "reference"
    """Column holding the reference answer: a string, or a list of acceptable strings."""
    block_size: int | None = None
    """Tokens per perplexity block. None: the training run's ``data.block_size`` as the checkpoint or the
    export's ``training.json`` records it, else the tokenizer's ``model_max_length`` (exports before
    ``training.json`` kept the block size there; other models keep their context there), else the model's
    positions (at most 1024)."""
    document_mask: bool | None = None
    """Score each document of a block on its own context (its own tokens only, positions restarting after each
    eos, its first token not a target), as ``--model.document_mask true`` trains. None: what the training run
    used, as the checkpoint's hyperparameters or the export's ``training.json`` record it (off when neither
    does); true / false force it."""
    batch_size: int = 8
    """Blocks (perplexity) or prompts (task metrics) per forward / generate call."""
    max_docs: int | None = None
    """Read at most this many documents and this many prompt rows (a quick estimate)."""
    max_new_tokens: int = 32
    """Longest generated answer for the task metrics."""
    decoding: str = "greedy"
    """Decoding setting for the task metrics, as in ``modeling.generate --settings`` (e.g. ``t0.7_p0.9``)."""
    seed: int = 0
    """Seed of the sampling when ``decoding`` samples."""
    first_line: bool = False
    """Score only the first line of each generation (one-line answers; the model may ramble on after)."""
    output: str = "metrics.json"
    """Where the metrics JSON is written. A Markdown report (``<output stem>.md``) and, for breakdowns, a bar
    chart of bits per byte per group (``<output stem>-bpb.png``) are written beside it."""
    # curated shards' column names (curation/columns.py SOURCE, LANG; the curation contract does not export them)
    breakdown_columns: tuple[str, ...] = ("source", "lang")
    """Document columns to break bits per byte, perplexity and accuracy down by (curated shards carry ``source``
    and ``lang``). Columns no ``data`` file has are skipped; ``()`` turns the breakdowns off."""
    max_groups: int = 20
    """Groups listed per breakdown, largest by bytes first; the rest are summed as one ``(other)`` row, so a
    corpus of 10k sources stays readable and the rows still add up to the totals."""
    report: bool = True
    """Write the Markdown report and the bar chart beside ``output`` (the chart needs matplotlib)."""
    predictions: str | None = None
    """Also write each prompt, its references and the model's answer to this JSONL, for error analysis."""
    device: str = "auto"
    """``cpu``, ``cuda``, ``cuda:N`` or ``auto`` (the GPU when there is one)."""
    dtype: str = "auto"
    """Weights dtype: ``float32``, ``bfloat16``, ``float16`` or ``auto`` (float32 on CPU, bf16 on a GPU)."""
    tokenizer: str | None = None
    """Tokenizer directory overriding the one saved with the model (or recorded in the checkpoint)."""
    log_every: int = 20
    """Log progress every this many batches."""
    harness_tasks: tuple[str, ...] = ()
    """lm-evaluation-harness tasks run on the same loaded model after the metrics above, their table in the
    output's ``harness`` section: the local domain tasks (``domain``, ``domain_cloze``, ``domain_choice``, written
    by ``python -m modeling.harness tasks`` into a ``harness_include`` folder) or standard hub tasks
    (``hellaswag``, ``arc_easy``, ... where the hub is reachable)."""
    harness_include: tuple[str, ...] = ()
    """Folders of task YAMLs for ``harness_tasks`` (the folder the domain tasks were written to)."""
    harness_limit: int | None = None
    """Score at most this many items per harness task: a quick look, not a number to report."""
    harness_num_fewshot: int | None = None
    """Few-shot examples per harness item; None keeps each task's default."""
