"""``model.fused_cross_entropy``: where a model's output head and loss are computed together, chunk by chunk.

The kernel (``chunked``) is :func:`modeling.loss.linear_cross_entropy`; this module fits it to a model: the
transformer body and its output head (:func:`body_and_head`), the models it cannot serve (a quantized or
non-linear head, logit soft-capping or scaling: :func:`check_fused_supported`, when the model is built), a
check that the model's own logits are that head applied to the body's output (:func:`check_fused_matches_model`,
once when training starts), and the loss itself (:func:`fused_loss`), with Liger-Kernel's Triton kernel as the
``liger`` alternative.
"""

from __future__ import annotations

import torch
from transformers import PreTrainedModel

from modeling.loss import (
    IGNORE_INDEX,
    ChunkFn,
    chunk_cross_entropy,
    head_logits,
    head_operands,
    linear_cross_entropy,
    unsupported_head,
)
from modeling.model_config import FusedCrossEntropy, ModelConfigError

#: Model config keys whose non-default value means the logits are not ``lm_head(last hidden state)``.
LOGIT_TRANSFORMS = {"final_logit_softcapping": None, "logit_softcapping": None, "logit_scale": None,
                    "logits_scaling": 1.0}


def fused_loss(model: PreTrainedModel, mode: FusedCrossEntropy, inputs: dict[str, torch.Tensor],
               targets: torch.Tensor, with_accuracy: bool,
               chunk_fn: ChunkFn = chunk_cross_entropy) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``model.fused_cross_entropy``: the transformer body, then the head and the loss chunk by chunk
    (``modeling.loss``), never the full logits. ``inputs`` are the body's keyword arguments (``input_ids`` and
    optionally ``attention_mask``, ``position_ids``: ``modeling.document_mask``); ``targets`` are flat, in the
    order of the flattened ``input_ids``. Returns the mean loss and the correct-prediction count.
    Call :func:`check_fused_matches_model` once first."""
    body, head = body_and_head(model)
    hidden = body(**inputs, use_cache=False).last_hidden_state
    hidden = hidden.reshape(-1, hidden.shape[-1])
    weight, bias, extra = head_operands(head, hidden)
    if mode == "liger":
        from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss

        loss = LigerFusedLinearCrossEntropyLoss(ignore_index=IGNORE_INDEX)(weight, hidden, targets, bias)
        correct = None
        if with_accuracy:  # Liger returns no logits: one more head pass, chunked and without gradients
            with torch.no_grad():
                _, correct = linear_cross_entropy(hidden, weight, targets, bias, with_accuracy=True)
        return loss, correct
    return linear_cross_entropy(hidden, weight, targets, bias, extra, with_accuracy=with_accuracy, chunk_fn=chunk_fn)


def check_fused_supported(model: PreTrainedModel, mode: FusedCrossEntropy) -> None:
    """``model.fused_cross_entropy`` needs logits == lm_head(last hidden state), with a head it can decompose."""
    flag = f"model.fused_cross_entropy={mode}"
    _, head = body_and_head(model)
    reason = unsupported_head(head, allow_lora=mode != "liger")
    if reason is not None:
        lora_hint = (" (remove the head from model.lora.target_modules, or use chunked)" if "LoRA" in reason
                     else "")
        raise ModelConfigError(f"{flag} does not support {reason}{lora_hint}; set model.fused_cross_entropy "
                               "off")
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    for key, neutral in LOGIT_TRANSFORMS.items():
        value = getattr(config, key, None)
        if value is not None and value != neutral:
            raise ModelConfigError(
                f"{flag}: this {config.model_type} model transforms its logits ({key}={value}), which the "
                "fused loss does not apply; set model.fused_cross_entropy off"
            )


@torch.no_grad()
def check_fused_matches_model(model: PreTrainedModel, mode: FusedCrossEntropy) -> None:
    """Once, when training (or validation) starts: Liger is usable if asked for, and the model's own logits on a
    few tokens equal the fused loss's head applied to the body's output.
    Catches a forward that does more than ``lm_head(hidden)`` (scaling, soft-capping) in a model we do not
    know, before it trains a different model than the one that gets exported."""
    if mode == "liger":
        # here, not at construction: a checkpoint trained with Liger must still load for evaluation anywhere
        check_liger_possible()
    flag = f"model.fused_cross_entropy={mode}"
    body, head = body_and_head(model)
    emb = model.get_input_embeddings().weight
    limit = next((v for k in ("n_positions", "max_position_embeddings")
                  if isinstance(v := getattr(model.config, k, None), int)), 8)
    ids = ((torch.arange(min(8, limit), device=emb.device) * 7919 + 3) % emb.shape[0]).unsqueeze(0)
    was_training = model.training
    model.eval()  # no dropout: both passes must see the same activations
    try:
        with torch.autocast(emb.device.type, enabled=False):
            reference = model(input_ids=ids, use_cache=False).logits[0].float()
            hidden = body(input_ids=ids, use_cache=False).last_hidden_state[0]
            operands = head_operands(head, hidden)
            if operands[0].numel() == 0:
                raise ModelConfigError(
                    f"{flag}: the output head's weight is partitioned outside its forward (DeepSpeed ZeRO-3?) "
                    "and the fused loss reads it directly: use DDP or FSDP, or set model.fused_cross_entropy off")
            ours = head_logits(operands, hidden)
    finally:
        model.train(was_training)
    exact = emb.dtype == torch.float32 and ours.shape == reference.shape
    tolerance = (1e-4 if exact else 2e-2) * max(1.0, reference.abs().max().item())
    diff = (ours - reference).abs().max().item() if ours.shape == reference.shape else float("inf")
    if not diff <= tolerance:
        raise ModelConfigError(
            f"{flag}: {type(model).__name__}'s logits are not its output head applied to the last hidden "
            f"state (max difference {diff:.3g} on a test input): its forward does more, which the fused loss "
            "would leave out. Set model.fused_cross_entropy off"
        )




def body_and_head(model: torch.nn.Module) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The transformer body (``model.transformer`` for GPT-2, ``model.model`` for Llama: what returns the last
    hidden state) and the output head, also through a peft wrapper (whose adapters live inside both)."""
    hf = model.get_base_model() if hasattr(model, "get_base_model") else model
    body = getattr(hf, "base_model", hf)
    head = hf.get_output_embeddings() if hasattr(hf, "get_output_embeddings") else None
    if body is hf or head is None:
        raise ModelConfigError(
            f"model.fused_cross_entropy needs a model with a transformer body and a separate output head "
            f"(model.transformer or model.model, and lm_head); {type(hf).__name__} has "
            + ("no body" if body is hf else "no output head") + ". Set model.fused_cross_entropy off"
        )
    return body, head


def check_liger_possible() -> None:
    """``fused_cross_entropy=liger`` prerequisites, checked when training starts."""
    if not torch.cuda.is_available():
        raise ModelConfigError(
            "model.fused_cross_entropy=liger needs a CUDA GPU (Liger-Kernel is written in Triton); use "
            "model.fused_cross_entropy=chunked on this machine"
        )
    try:
        import liger_kernel.transformers  # noqa: F401
    except ImportError as err:
        raise ModelConfigError(
            "model.fused_cross_entropy=liger needs Liger-Kernel: pip install liger-kernel (or use "
            "model.fused_cross_entropy=chunked, which needs nothing)"
        ) from err
