"""The library behind ``python -m modeling.evaluate`` (the command and its usage: ``modeling/evaluate.py``).

One concern a module: ``config`` (the options and the error), ``data`` (which files feed which metrics),
``scoring`` (the one scoring loop, and the definition of bits per byte), ``perplexity`` (perplexity, next-token
accuracy and bits per byte over blocks packed as training packs them), ``breakdown`` (the same per source and per
language), ``report`` (the Markdown report and chart), ``heldout`` (training's held-out bpb callback) and
``tasks`` (generated answers against references), ``harness``
(lm-evaluation-harness in process, on any model form) and ``domain_tasks`` (lm-eval tasks written from
held-out documents). Model loading and generation come from ``modeling.inference``, shared
with ``modeling.generate``.
"""
