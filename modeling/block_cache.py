"""Writing packed blocks into a token cache folder: ``<name>.npy`` of shape (n_blocks, block_size).

Tokens are streamed to a flat file as the blocks come (memory is bounded by one batch of documents), then copied
into a ``.npy`` the DataLoaders memory-map; only the set's last block is padded. Each written set reports what it
holds (documents, tokens, blocks, the real tokens of its last block, the sha256 of its token stream) for the
cache's ``meta.json``. :class:`modeling.data.TextDataModule` decides which documents go into which set.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from lightning.pytorch.utilities import rank_zero_info

from modeling.packing import BlockPacker


class BlockWriter:
    """Packs the documents ``add``-ed to it (with :class:`BlockPacker`, training's one packing) into
    ``folder/<name>.npy``; ``close`` writes the array and returns the set's summary."""

    def __init__(self, folder: Path, name: str, tokenizer: Any, block_size: int, dtype: np.dtype) -> None:
        self.folder, self.name, self.block_size, self.dtype = folder, name, block_size, np.dtype(dtype)
        self.packer = BlockPacker(tokenizer, block_size)
        self._stream_path = folder / f".{name}.tokens.bin"
        self._stream = open(self._stream_path, "wb")  # noqa: SIM115 - closed in close(), across many add() calls
        self._digest = hashlib.sha256()  # of the token stream: the set's identity, recorded in checkpoints
        pad = tokenizer.pad_token_id
        self._pad = pad if pad is not None else tokenizer.eos_token_id

    @property
    def docs(self) -> int:
        return self.packer.docs

    def add(self, texts: list[str]) -> None:
        """Pack ``texts`` after the documents added before."""
        for block in self.packer.add(texts):
            self._write(block)

    def close(self) -> dict[str, Any]:
        """Write ``<name>.npy`` and return ``docs``, ``tokens``, ``blocks``, ``last_block_tokens``, ``tokens_sha256``."""
        for block in self.packer.finish():
            self._write(block)
        self._stream.close()
        tokens, size = self.packer.tokens, self.block_size
        n_blocks = -(-tokens // size)
        blocks = np.lib.format.open_memmap(self.folder / f"{self.name}.npy", mode="w+", dtype=self.dtype,
                                           shape=(n_blocks, size))
        if tokens:
            stream = np.memmap(self._stream_path, dtype=self.dtype, mode="r", shape=(tokens,))
            blocks.reshape(-1)[:tokens] = stream
            blocks.reshape(-1)[tokens:] = self._pad
            del stream
        blocks.flush()
        del blocks
        self._stream_path.unlink()
        return {"docs": self.packer.docs, "tokens": tokens, "blocks": n_blocks,
                "last_block_tokens": tokens - (n_blocks - 1) * size if n_blocks else 0,
                "tokens_sha256": self._digest.hexdigest()}

    def _write(self, block: list[int]) -> None:
        flat = np.asarray(block, dtype=self.dtype)
        flat.tofile(self._stream)  # written back to back, the blocks are the token stream
        self._digest.update(flat.tobytes())


def build_once(final: Path, write: Callable[[Path], dict[str, Any]]) -> Path:
    """Fill the cache folder ``final`` unless it is complete (has ``meta.json``): ``write`` fills a temporary
    folder beside it and returns the meta, then the folder is renamed into place, so a crashed build never
    leaves a half cache under the key."""
    if (final / "meta.json").exists():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".building-", dir=final.parent))
    try:
        meta = write(tmp)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
        try:
            os.replace(tmp, final)
        except OSError:
            if not (final / "meta.json").exists():  # another node finished first on a shared disk: fine
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    rank_zero_info(f"data: tokenized {meta['docs']:,} docs into {meta['tokens']:,} tokens -> {final}")
    return final
