"""What a DataLoader reads out of the token cache: the blocks as training examples, and a sampler that can resume an
epoch part-way."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import Dataset, DistributedSampler

from modeling.loss import IGNORE_INDEX


class TokenBlocks(Dataset):
    """Fixed-length token blocks from a memory-mapped cache; item ``i`` is one training example."""

    def __init__(self, blocks: np.ndarray, indices: np.ndarray, last_block_len: int) -> None:
        self.blocks = blocks
        self.indices = indices
        self.last_block = len(blocks) - 1
        self.last_block_len = last_block_len

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        row = int(self.indices[i])
        ids = torch.from_numpy(self.blocks[row].astype(np.int64))
        labels = ids
        if row == self.last_block and self.last_block_len < len(ids):
            # Only the corpus' final block is padded, at its end. Its padding is not scored; it needs no attention
            # mask either, since under causal attention no real token can see the padding after it (and
            # leaving the mask out keeps every batch on the kernels' fast causal path).
            labels = ids.clone()
            labels[self.last_block_len:] = IGNORE_INDEX
        return {"input_ids": ids, "labels": labels}


class ResumableSampler(DistributedSampler):
    """DistributedSampler that can start an epoch part-way, so ``--ckpt_path last`` continues at the same batch.

    Lightning leaves a DistributedSampler subclass in place (it does not wrap it), and calls ``set_epoch`` at
    every epoch start; the shuffle order is a pure function of (seed, epoch), so skipping the first ``skip``
    indices of the resumed epoch reproduces the uninterrupted run exactly.
    """

    def __init__(self, dataset: Dataset, num_replicas: int, rank: int, seed: int, shuffle: bool = True) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed)
        self._resume_epoch: int | None = None
        self._resume_skip = 0

    def resume_at(self, epoch: int, samples_done: int) -> None:
        """Skip ``samples_done`` of this rank's samples the next time ``epoch`` is iterated."""
        self._resume_epoch, self._resume_skip = epoch, samples_done

    def __iter__(self) -> Iterator[int]:
        indices = list(super().__iter__())
        if self._resume_epoch == self.epoch and self._resume_skip:
            indices = indices[self._resume_skip:]
            self._resume_epoch, self._resume_skip = None, 0
        return iter(indices)
