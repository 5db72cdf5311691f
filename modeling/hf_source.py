"""A Hugging Face dataset as training data (``--data.hf_dataset``, configured by ``modeling.data.HFDatasetConfig``):
loading it, its rows as keyed documents, the local files behind it (for the token cache's key) and the checks that
fail before ``load_dataset`` is tried."""

from __future__ import annotations

import glob
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from common.files import names_a_local_path

if TYPE_CHECKING:  # defined in modeling.data, the class path that checkpoints record in their hyperparameters
    from modeling.data import HFDatasetConfig


def local_dataset_files(cfg: HFDatasetConfig) -> list[list[Any]]:
    """(path, size, mtime) of each local file behind ``data.hf_dataset``: the matches of ``data_files`` (relative
    to ``name`` when that is a local folder, as ``load_dataset`` reads them), or every file of a local dataset
    folder. Empty for a hub dataset, whose name/config/revision identify it."""
    base = Path(cfg.name).expanduser()
    base_dir = base if base.is_dir() else None
    patterns = [cfg.data_files] if isinstance(cfg.data_files, str) else list(cfg.data_files or [])
    if not patterns and base_dir is not None:
        patterns = ["**/*"]
    found: set[Path] = set()
    for pattern in patterns:
        where = Path(pattern).expanduser()
        if not where.is_absolute() and base_dir is not None:
            where = base_dir / where
        found.update(Path(m).resolve() for m in glob.glob(str(where), recursive=True) if Path(m).is_file())
    return [[str(f), f.stat().st_size, f.stat().st_mtime_ns] for f in sorted(found)]


def check_hf_dataset(cfg: HFDatasetConfig | None, error: type[Exception]) -> None:
    """Local parts of ``--data.hf_dataset`` that do not exist fail before ``load_dataset`` is tried."""
    assert cfg is not None
    name = Path(cfg.name).expanduser()
    if not name.exists() and names_a_local_path(cfg.name):
        raise error(f"--data.hf_dataset.name {cfg.name!r}: no such folder. Give a local dataset folder, "
                              "a hub dataset name, or a builder (parquet, json, text) with --data.hf_dataset.data_files")
    if cfg.data_files is None or not (name.is_dir() or _is_packaged_builder(cfg.name)):
        return  # a hub dataset's data_files are paths inside its repository, not local ones
    patterns = [cfg.data_files] if isinstance(cfg.data_files, str) else list(cfg.data_files)
    local = [p for p in patterns if "://" not in p]
    if local and not local_dataset_files(cfg):
        where = f" (relative to {cfg.name!r})" if name.is_dir() else ""
        raise error(f"--data.hf_dataset.data_files {cfg.data_files!r} matches no file{where}: check the "
                              "paths or globs")


def _is_packaged_builder(name: str) -> bool:
    """Whether ``name`` is one of the datasets library's file builders (``parquet``, ``json``, ``csv``, ``text``...)."""
    from datasets.packaged_modules import _PACKAGED_DATASETS_MODULES

    return name in _PACKAGED_DATASETS_MODULES




def load_hf_dataset(cfg: HFDatasetConfig, text_column: str, error: type[Exception]) -> Any:
    """``datasets.load_dataset`` of ``cfg``; a dataset that cannot be loaded, or lacks ``text_column``, raises
    ``error`` naming the flag to fix."""
    import datasets

    try:
        ds = datasets.load_dataset(cfg.name, cfg.config, data_files=cfg.data_files, split=cfg.split,
                                   streaming=cfg.streaming, revision=cfg.revision)
    except (FileNotFoundError, ConnectionError, ValueError) as err:  # not found, offline, no such config/split
        raise error(
            f"--data.hf_dataset: cannot load {cfg.name!r} (config={cfg.config!r}, split={cfg.split!r}, "
            f"data_files={cfg.data_files!r}): {err}. Check --data.hf_dataset.name and its data_files, config "
            "and split; a hub dataset needs network access or the datasets cache"
        ) from err
    if ds.column_names is not None and text_column not in ds.column_names:
        raise error(f"--data.hf_dataset {cfg.name!r} has no column {text_column!r}; it has "
                    f"{ds.column_names}. Set --data.text_column.")
    return ds


def iter_hf_documents(rows: Iterable[dict[str, Any]], text_column: str, id_column: str | None, batch_size: int,
                      max_docs: int | None) -> Iterator[list[tuple[str, str]]]:
    """(key, text) batches of a dataset's rows, keyed like ``modeling.corpus.iter_keyed_documents``: the id
    column's value where the row has one, else the text."""
    batch: list[tuple[str, str]] = []
    for i, row in enumerate(rows):
        if max_docs is not None and i >= max_docs:
            break
        text = row.get(text_column)
        if isinstance(text, str) and text:
            key = row.get(id_column) if id_column is not None else None
            batch.append((text if key is None else str(key), text))
        if len(batch) >= batch_size:
            yield batch
            batch = []
    if batch:
        yield batch
