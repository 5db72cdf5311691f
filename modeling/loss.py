"""The next-token loss: what is scored and how, for training (``modeling.module``) and evaluation alike.

Every token predicts the next one: :func:`next_token_targets` shifts the labels (not the logits) one to the left,
and :func:`token_cross_entropy` is the mean cross-entropy over the labelled targets in fp32; perplexity
(:class:`TokenPerplexity`) is exp of that mean, weighted by tokens. ``val_ppl`` during training and
``modeling.evaluate``'s perplexity are the same number on the same blocks because both are computed here.

Cross-entropy of a linear output head without its full logits (``model.fused_cross_entropy``): the head and the
loss, one chunk of tokens at a time. The standard path computes ``logits = lm_head(hidden)`` for every token, a (tokens, vocab) tensor, then the loss.
With a 50k vocabulary and 16 x 1024 tokens a step, those logits in fp32, the log-softmax that cross-entropy keeps
for backward and the logits' gradient take several GB and a large share of a GPU step. :func:`linear_cross_entropy`
gives the same mean loss one chunk of tokens at a time, and when gradients are needed it computes them in the
same pass: d loss / d logits (softmax minus one-hot) is known as soon as a chunk's logits are, so each chunk's
logits live only inside its iteration, nothing is recomputed, and backward only scales the stored gradients.
It runs the same three matmuls per token as the standard path, in the autocast dtype (bf16/fp16 under mixed
precision), and does the softmax, the loss and the weight gradient's accumulation over chunks in fp32.

:func:`head_operands` turns a model's output head (a ``Linear``; peft's ``modules_to_save`` copy of it; a peft
LoRA ``Linear`` on it) into the sum of products the loss needs, so adapters on the head still apply.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import MeanMetric

#: Label value the loss skips (padding, masked prompts, the position after the last token).
IGNORE_INDEX = -100

#: Logits per chunk (2**24: 64 MB in fp32): about the size of the hidden states themselves at GPT-2/Llama shapes
#: (Liger-Kernel's rule too), and still a large matmul (256 tokens x 768 x 50k for GPT-2).
CHUNK_ELEMENTS = 2**24

#: (weight, bias, extra): ``head(h) == h @ weight.T + bias + sum(x @ w.T for x, w in extra)``.
HeadOperands = tuple[Tensor, Tensor | None, list[tuple[Tensor, Tensor]]]


def next_token_targets(labels: Tensor) -> Tensor:
    """(batch, time) labels -> the target of each position: the next label, IGNORE_INDEX after the last one.
    Shifting the labels rather than the logits avoids copying a (batch, time - 1, vocab) view when flattening."""
    return F.pad(labels, (0, 1), value=IGNORE_INDEX)[:, 1:]


def token_cross_entropy(logits: Tensor, targets: Tensor, reduction: str = "mean") -> Tensor:
    """Cross-entropy of (tokens, vocab) logits against targets, skipping IGNORE_INDEX, computed in fp32.
    ``--model.compile`` compiles this function."""
    return F.cross_entropy(logits.float(), targets, ignore_index=IGNORE_INDEX, reduction=reduction)


class TokenPerplexity(MeanMetric):
    """exp of the token-weighted mean loss. Averaging losses (not perplexities) keeps it exact across batches
    of different sizes and across DDP ranks."""

    def compute(self) -> Tensor:
        return torch.exp(super().compute())


def default_chunk_size(n_tokens: int, vocab: int) -> int:
    """Tokens per chunk: a power of two (at least 16) giving about ``CHUNK_ELEMENTS`` logits."""
    per_chunk = max(16, 1 << max(0, (CHUNK_ELEMENTS // max(1, vocab)).bit_length() - 1))
    return max(1, min(n_tokens, per_chunk))


def chunk_cross_entropy(xs: Sequence[Tensor], ws: Sequence[Tensor], bias: Tensor | None, targets: Tensor,
                        with_grad: bool, with_accuracy: bool) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """One chunk: the summed loss over its labelled tokens, how many of them the argmax predicts (or None), and
    d(summed loss)/d(logits) in the matmul dtype (or None). That gradient's rows for ignored tokens are left
    unmasked: the caller masks them on (tokens, width) tensors, cheaper than a pass over (tokens, vocab) here.
    ``--model.compile`` compiles this function."""
    logits = torch.mm(xs[0], ws[0].t()).float()
    for x, w in zip(xs[1:], ws[1:]):
        logits = logits + torch.mm(x, w.t()).float()
    if bias is not None:
        logits = logits + bias.float()
    keep = targets != IGNORE_INDEX
    safe = torch.where(keep, targets, 0).unsqueeze(1)
    correct = (logits.argmax(-1) == targets).sum() if with_accuracy else None  # an ignored target never matches
    logp = torch.log_softmax(logits, dim=-1)  # one fused pass (logsumexp is several on CPU and GPU alike)
    del logits
    loss_sum = -torch.where(keep, logp.gather(1, safe).squeeze(1), 0.0).sum()
    if not with_grad:
        return loss_sum, correct, None
    grad = logp.exp_()  # softmax, in the same buffer
    grad.scatter_add_(1, safe, torch.full(safe.shape, -1.0, dtype=grad.dtype, device=grad.device))
    return loss_sum, correct, grad.to(xs[0].dtype)


ChunkFn = Callable[..., tuple[Tensor, Tensor | None, Tensor | None]]


def linear_cross_entropy(hidden: Tensor, weight: Tensor, targets: Tensor, bias: Tensor | None = None,
                         extra: Sequence[tuple[Tensor, Tensor]] = (), *, chunk_size: int | None = None,
                         with_accuracy: bool = False, chunk_fn: ChunkFn = chunk_cross_entropy,
                         ) -> tuple[Tensor, Tensor | None]:
    """Mean cross-entropy of ``hidden @ weight.T + bias + sum(x @ w.T for x, w in extra)`` against ``targets``,
    skipping IGNORE_INDEX, without materialising the (tokens, vocab) logits.

    ``hidden`` is (tokens, width), ``weight`` (vocab, width), ``targets`` (tokens,); each ``extra`` pair is
    (tokens, k) and (vocab, k) (a LoRA adapter on the head: k is its rank). Returns the loss (fp32, NaN when no
    token is labelled, as ``F.cross_entropy``) and, with ``with_accuracy``, the number of labelled tokens whose
    argmax logit is the target. The matmuls run in the autocast dtype when autocast is on (as ``lm_head`` would),
    else in ``weight``'s dtype.
    """
    operands = [hidden, weight]
    for x, w in extra:
        operands += [x, w]
    device = hidden.device.type
    dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else weight.dtype
    size = chunk_size or default_chunk_size(targets.shape[0], weight.shape[0])
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (bias, *operands)):
        loss, correct = _LinearCrossEntropy.apply(targets, size, with_accuracy, dtype, chunk_fn, bias, *operands)
    else:
        loss_sum, correct, n_valid, _ = _run_chunks(targets, size, with_accuracy, dtype, chunk_fn, bias, operands,
                                                    needs=[False] * (len(operands) + 1))
        loss = loss_sum / n_valid
    return loss, (correct if with_accuracy else None)


def head_operands(head: torch.nn.Module, hidden: Tensor) -> HeadOperands:
    """Decompose ``head(hidden)`` into (weight, bias, extra products), as the head's own forward computes it:
    peft's ``modules_to_save`` wrapper runs its active copy; a peft LoRA layer adds ``B(A(dropout(h))) * scale``
    per active adapter (``extra``: the (tokens, r) activations and B's weight). Call :func:`unsupported_head` first.
    """
    head = _active_module(head)
    if _is_lora_layer(head):
        base = head.get_base_layer()
        extra: list[tuple[Tensor, Tensor]] = []
        if not head.disable_adapters and not head.merged:
            for name in head.active_adapters:
                if name not in head.lora_A:
                    continue
                lora_a = head.lora_A[name]
                x = head.lora_dropout[name](hidden.to(lora_a.weight.dtype))
                extra.append((lora_a(x) * head.scaling[name], head.lora_B[name].weight))
        return base.weight, base.bias, extra
    return head.weight, head.bias, []


def unsupported_head(head: torch.nn.Module, allow_lora: bool = True) -> str | None:
    """Why :func:`head_operands` cannot express ``head`` (None if it can)."""
    head = _active_module(head)
    if _is_lora_layer(head):
        if not allow_lora:
            return "LoRA adapters on the output head"
        for name in head.active_adapters:
            if name in getattr(head, "lora_variant", {}):
                return f"a LoRA variant ({type(head.lora_variant[name]).__name__}, e.g. DoRA) on the output head"
            if name in head.lora_B and head.lora_B[name].bias is not None:
                return "LoRA adapters with a bias (lora_bias) on the output head"
        head = head.get_base_layer()
    if not isinstance(head, torch.nn.Linear):
        return f"an output head of type {type(head).__name__} (a torch.nn.Linear is needed)"
    if not head.weight.is_floating_point():
        return "a quantized output head"
    return None


def head_logits(head_ops: HeadOperands, hidden: Tensor) -> Tensor:
    """The full logits from :func:`head_operands`' decomposition, in fp32 (for checks, not training)."""
    weight, bias, extra = head_ops
    logits = torch.mm(hidden.to(weight.dtype), weight.t()).float()
    for x, w in extra:
        logits = logits + torch.mm(x.to(w.dtype), w.t()).float()
    return logits if bias is None else logits + bias.float()


# ------------------------------------------------------------------------------------------------- internals
class _LinearCrossEntropy(torch.autograd.Function):
    """The chunked loss with its gradients computed in forward; backward scales them by d(out)/d(loss) / tokens."""

    @staticmethod
    def forward(ctx, targets, size, with_accuracy, dtype, chunk_fn, bias, *operands):
        needs = list(ctx.needs_input_grad[5:])  # bias, then x0, w0, x1, w1, ...
        loss_sum, correct, n_valid, grads = _run_chunks(targets, size, with_accuracy, dtype, chunk_fn, bias,
                                                        operands, needs)
        ctx.dtypes = [None if t is None else t.dtype for t in (bias, *operands)]
        ctx.save_for_backward(n_valid, *grads)
        if correct is None:
            correct = torch.zeros((), dtype=torch.long, device=targets.device)
        ctx.mark_non_differentiable(correct)
        return loss_sum / n_valid, correct

    @staticmethod
    def backward(ctx, grad_loss, _grad_correct):
        n_valid, *grads = ctx.saved_tensors
        scale = grad_loss.float() / n_valid.clamp(min=1)  # no labelled token: zero gradients, not NaN
        out = [None if g is None else (g.float() * scale).to(dtype) for g, dtype in zip(grads, ctx.dtypes)]
        return None, None, None, None, None, *out


def _run_chunks(targets: Tensor, size: int, with_accuracy: bool, dtype: torch.dtype, chunk_fn: ChunkFn,
                bias: Tensor | None, operands: Sequence[Tensor], needs: Sequence[bool],
                ) -> tuple[Tensor, Tensor | None, Tensor, list[Tensor | None]]:
    """Loss sum, correct count, labelled tokens, and the unscaled gradients of (bias, *operands) where needed."""
    xs = [t.to(dtype) for t in operands[0::2]]
    ws = [t.to(dtype) for t in operands[1::2]]
    n = targets.shape[0]
    device = targets.device
    with_grad = any(needs)
    need_bias, need_x, need_w = needs[0], needs[1::2], needs[2::2]
    keep = (targets != IGNORE_INDEX).unsqueeze(1)
    rows = keep.to(dtype)  # zeroes the ignored tokens' gradient rows, on (tokens, width) tensors
    grad_bias = torch.zeros(ws[0].shape[0], dtype=torch.float32, device=device) if need_bias else None
    grad_x = [torch.empty_like(x) if need else None for x, need in zip(xs, need_x)]
    # fp32 accumulation over chunks, whatever the matmul dtype
    grad_w = [torch.zeros(w.shape, dtype=torch.float32, device=device) if need else None for w, need in zip(ws, need_w)]
    loss_sum = torch.zeros((), dtype=torch.float32, device=device)
    correct = torch.zeros((), dtype=torch.long, device=device) if with_accuracy else None
    with torch.autocast(device.type, enabled=False):  # the dtypes are explicit; autocast would only add casts
        for start in range(0, n, size):
            stop = min(n, start + size)
            chunk_loss, chunk_correct, grad = chunk_fn([x[start:stop] for x in xs], ws, bias, targets[start:stop],
                                                       with_grad, with_accuracy)
            loss_sum += chunk_loss
            if correct is not None:
                correct += chunk_correct
            if grad is None:
                continue
            for i, x in enumerate(xs):
                if grad_x[i] is not None:
                    torch.mm(grad, ws[i], out=grad_x[i][start:stop])
                if grad_w[i] is not None:
                    x_kept = x[start:stop] * rows[start:stop]
                    if grad.dtype == torch.float32:
                        grad_w[i].addmm_(grad.t(), x_kept)
                    else:
                        grad_w[i] += torch.mm(grad.t(), x_kept).float()
            if grad_bias is not None:
                grad_bias += torch.mv(grad.t(), rows[start:stop, 0]).float()
    for gx in grad_x:
        if gx is not None:
            gx.mul_(rows)
    n_valid = keep.sum()
    grads: list[Tensor | None] = [grad_bias]
    for gx, gw in zip(grad_x, grad_w):
        grads += [gx, gw]
    return loss_sum, correct, n_valid, grads


def _active_module(head: torch.nn.Module) -> torch.nn.Module:
    """The module a peft ``modules_to_save`` wrapper would run (its active copy, or the original when disabled)."""
    if hasattr(head, "modules_to_save") and hasattr(head, "original_module"):
        active = [] if head.disable_adapters else [a for a in head.active_adapters if a in head.modules_to_save]
        return head.modules_to_save[active[0]] if active else head.original_module
    return head


def _is_lora_layer(module: torch.nn.Module) -> bool:
    return hasattr(module, "lora_A") and hasattr(module, "get_base_layer")
