"""``model.document_mask``: each document of a packed block attends only to itself, and its positions restart at 0.

The token cache holds blocks of documents joined by eos (``modeling.packing``), so the boundaries are already in
the tokens: the token after an eos starts a new document. Everything here is derived from ``input_ids`` and the
eos id on the fly, on the device, per batch; the cache and shard formats do not change, and a cache built
without the option trains with it.

How the model is told depends on its attention kernel (:func:`document_inputs`):

- ``flash_attention_2`` / ``flash_attention_3``: position ids only, with the batch flattened to one row, which is
  how transformers recognises a packed sequence for flash attention (``_is_packed_sequence`` wants batch 1; its
  ``DataCollatorWithFlattening`` does the same). The kernel then runs variable-length attention
  (``cu_seqlens``): no mask is built and no attention is computed across documents, the fast path on a GPU.
- ``flex_attention``: position ids only; ``masking_utils`` finds the documents (``find_packed_sequence_indices``)
  and builds a block-sparse mask that skips the blocks between documents.
- ``eager``, ``sdpa`` and anything else: an explicit block-diagonal causal 4D mask (bool for SDPA, additive for
  eager) plus the position ids. Every model that takes a 4D ``attention_mask`` honours it, including GPT-2 with
  its learned absolute positions (the position ids index ``wpe``). Costs a (batch, 1, time, time) mask and the
  kernel's masked (not causal) path; no attention FLOPs are saved.

The loss: the first token of a document is not a training target (:func:`mask_document_starts`). Under the
mask, the eos that precedes it sees only the previous document, so "which token starts the next, unrelated
document" is noise; TRL's padding-free collator drops the same label. The eos itself stays a target (the model
learns to end a document).
"""

from __future__ import annotations

import torch
from transformers import PreTrainedModel

from modeling.loss import IGNORE_INDEX
from modeling.model_config import ModelConfigError

#: Kernels that take packed documents as restarting position ids and need no explicit mask: flash attention
#: (``flash_attention_2``/``_3`` and hub kernels such as ``kernels-community/flash-attn3``: any name with "flash")
#: and flex attention.
FLEX_KERNEL = "flex_attention"


def is_flash_kernel(attn_implementation: str | None) -> bool:
    """Whether transformers runs this attention implementation through its flash-attention wrapper (which takes
    packed sequences as position ids of a single row, and no 4D mask)."""
    return attn_implementation is not None and "flash" in attn_implementation


def document_starts(input_ids: torch.Tensor, eos_id: int) -> torch.Tensor:
    """(batch, time) bool: True at every token that follows an eos (a document's first token in the block).
    The block's own first token is not marked: it starts the block's first document whatever precedes it."""
    after_eos = torch.zeros_like(input_ids, dtype=torch.bool)
    after_eos[:, 1:] = input_ids[:, :-1] == eos_id
    return after_eos


def document_ids(input_ids: torch.Tensor, eos_id: int) -> torch.Tensor:
    """(batch, time) long: the index of each token's document within its row, counted from 0."""
    return document_starts(input_ids, eos_id).long().cumsum(-1)


def document_position_ids(input_ids: torch.Tensor, eos_id: int) -> torch.Tensor:
    """(batch, time) long: each token's position within its document, 0 at the block's start and after each eos."""
    time = input_ids.shape[-1]
    steps = torch.arange(time, device=input_ids.device).expand_as(input_ids)
    starts = torch.where(document_starts(input_ids, eos_id), steps, torch.zeros_like(steps))
    return steps - starts.cummax(-1).values


def document_attention_mask(input_ids: torch.Tensor, eos_id: int, dtype: torch.dtype = torch.bool,
                            padding_mask: torch.Tensor | None = None) -> torch.Tensor:
    """(batch, 1, time, time) causal mask that also keeps each token within its document.

    ``dtype`` bool: True where a query may attend (what SDPA takes); a float dtype: 0 there and the dtype's
    minimum elsewhere (what eager attention adds to its scores). ``padding_mask`` (batch, time; 1 = real token)
    also hides padded keys.
    """
    docs = document_ids(input_ids, eos_id)
    time = input_ids.shape[-1]
    causal = torch.ones(time, time, dtype=torch.bool, device=input_ids.device).tril()
    allowed = (docs[:, :, None] == docs[:, None, :]) & causal
    if padding_mask is not None:
        allowed = allowed & padding_mask.bool()[:, None, :]
    allowed = allowed[:, None]
    if dtype == torch.bool:
        return allowed
    return torch.zeros(allowed.shape, dtype=dtype, device=input_ids.device).masked_fill(
        ~allowed, torch.finfo(dtype).min)


def mask_document_starts(labels: torch.Tensor, input_ids: torch.Tensor, eos_id: int) -> torch.Tensor:
    """``labels`` with IGNORE_INDEX at each document's first token (after an eos): under the document mask its
    prediction would come from the previous, unrelated document. A copy; ``labels`` is not changed."""
    return labels.masked_fill(document_starts(input_ids, eos_id), IGNORE_INDEX)


def document_inputs(input_ids: torch.Tensor, eos_id: int, attn_implementation: str | None,
                    mask_dtype: torch.dtype = torch.float32,
                    padding_mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """The keyword arguments of a transformers forward that packs the documents of ``input_ids`` apart.

    For flash attention the batch is flattened to one row of (1, batch x time): the caller reshapes the output
    back to (batch, time, ...); the row order is unchanged, so a flat view of the output needs no reshape.
    ``mask_dtype`` is the eager kernel's additive mask dtype (the model's weights' dtype).
    """
    positions = document_position_ids(input_ids, eos_id)
    if is_flash_kernel(attn_implementation) or attn_implementation == FLEX_KERNEL:
        if padding_mask is not None and not bool(padding_mask.all()):
            raise ModelConfigError(
                f"--model.document_mask with {attn_implementation} takes no padding mask (the documents are told "
                "apart by position ids alone): drop the attention_mask, or use attn_implementation sdpa or eager")
        if is_flash_kernel(attn_implementation):
            return {"input_ids": input_ids.reshape(1, -1), "position_ids": positions.reshape(1, -1)}
        return {"input_ids": input_ids, "position_ids": positions}
    dtype = torch.bool if attn_implementation == "sdpa" else mask_dtype
    mask = document_attention_mask(input_ids, eos_id, dtype, padding_mask)
    return {"input_ids": input_ids, "position_ids": positions, "attention_mask": mask}


def model_document_inputs(model: PreTrainedModel, input_ids: torch.Tensor, eos_id: int,
                          padding_mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """:func:`document_inputs` for ``model``: its attention kernel and, for eager's additive mask, its weights'
    dtype. The one place training (``CausalLMModule``) and evaluation (``score_blocks``) build the inputs, so
    both score a document on exactly the same context."""
    kernel = getattr(model.config, "_attn_implementation", None)
    dtype = model.get_input_embeddings().weight.dtype  # eager's additive mask: the weights' dtype
    return document_inputs(input_ids, eos_id, kernel, dtype, padding_mask)


def document_eos(model: PreTrainedModel, eos_token_id: int | None) -> int:
    """The eos that separates packed documents: the tokenizer's (the CLI links it), else the model config's."""
    eos = eos_token_id if eos_token_id is not None else getattr(model.config, "eos_token_id", None)
    if isinstance(eos, list):  # some configs list several ends of turn; the first is the tokenizer's eos
        eos = eos[0] if eos else None
    if eos is None:
        raise ModelConfigError(
            "--model.document_mask needs the eos token id that separates packed documents: give --data.tokenizer "
            "(the CLI links its eos), or pass eos_token_id= to CausalLMModule, or set --model.document_mask false"
        )
    return int(eos)
