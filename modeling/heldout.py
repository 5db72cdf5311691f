"""The documents ``python -m modeling.train test`` scores: held out from training *and* from validation.

Validation chooses the checkpoint and stops training, so its score flatters the model it chose; a test score
must come from documents no part of training looked at. Curation writes such documents beside its training
shards (``OUTPUT/heldout/``, picked by a hash of the document id, so never in ``OUTPUT/data/``); ``data.test_path``
names any other set. With neither, ``test`` stops and says so instead of scoring validation data again.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

from common.files import InputError
from curation import DATA_DIR, HELDOUT_DIR, curated_data_dir, curated_heldout_dir
from modeling.corpus import resolve_text_files

log = logging.getLogger(__name__)


def heldout_folder(path: str | Sequence[str] | None) -> Path | None:
    """``OUTPUT/heldout`` when ``path`` is a finished curation output (``_SUCCESS``; or its ``data/`` folder)
    that has one, else None."""
    if not isinstance(path, (str, os.PathLike)):
        return None  # a list of files names no curation output
    given = Path(path).expanduser()
    for root in (given, given.parent):
        # curated_data_dir: OUTPUT/data for a curation output (refusing an unfinished one), the path otherwise
        if root.is_dir() and curated_data_dir(root) != root and given in (root, curated_data_dir(root)):
            held = root / HELDOUT_DIR
            return held if held.is_dir() else None
    return None


def is_curation_output(path: Path) -> bool:
    """``path`` is a curation output folder (it has the tool's manifest; an unfinished one raises)."""
    return path.is_dir() and curated_data_dir(path) != path


def heldout_inputs(inputs: Sequence[str], option: str = "--data") -> list[str]:
    """Evaluation inputs with every curation output folder replaced by its ``heldout/``: evaluating "the
    corpus" means the documents no training saw. A curation output without one is refused, saying how to get
    one; its ``data/`` named on purpose is scored, with a warning that it is training data."""
    out: list[str] = []
    for raw in inputs:
        p = Path(raw).expanduser()
        if is_curation_output(p):
            try:
                out.append(str(curated_heldout_dir(p)))
            except InputError as err:
                raise InputError(f"{option} {raw}: {err} (or name its {DATA_DIR}/ folder to score training data, "
                                 "knowing the number flatters the model)") from err
            continue
        if p.name == DATA_DIR and is_curation_output(p.parent):
            log.warning("%s %s is the training side of a curation output: the scores flatter the model; "
                        "%s/ beside it holds the documents training never saw", option, raw, HELDOUT_DIR)
        out.append(raw)
    return out


def resolve_test_files(test_path: str | Sequence[str] | None, path: str | Sequence[str] | None,
                       training_files: Sequence[Path], text_column: str,
                       error: type[Exception]) -> list[Path]:
    """The held-out files: ``test_path``, else ``heldout/`` of the curation output ``path``; raises ``error``
    naming the fix when there are none, or when one of them is also a training file."""
    if test_path is not None:
        source, option = test_path, "--data.test_path"
    else:
        held = heldout_folder(path)
        if held is None:
            where = (f"--data.path {path!r} is not a finished curation output with a {HELDOUT_DIR}/ folder"
                     if path is not None else "--data.hf_dataset has no held-out default")
            raise error(
                f"test scores held-out documents, and there are none: {where}. Pass --data.test_path with "
                "documents that neither training nor validation read (a folder, glob or files), or run "
                "`validate` to score the validation split, knowing that it chose the checkpoint")
        source, option = str(held), f"{HELDOUT_DIR}/ of --data.path"
    try:
        files = resolve_text_files(source, text_column, column_option="--data.text_column")
    except InputError as err:
        raise error(f"{option}: {err}") from err
    shared = sorted({f.resolve() for f in files} & {f.resolve() for f in training_files})
    if shared:
        raise error(f"{option}: {shared[0]} is also read by training (--data.path): the test set must hold "
                    "documents training never saw. Point --data.test_path elsewhere.")
    return files
