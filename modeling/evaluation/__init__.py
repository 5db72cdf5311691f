"""The library behind ``python -m modeling.evaluate`` (the command and its usage: ``modeling/evaluate.py``).

One concern a module: ``config`` (the options and the error), ``data`` (which files feed which metrics),
``perplexity`` (perplexity and next-token accuracy over blocks packed as training packs them) and ``tasks``
(generated answers against references); ``harness`` (lm-evaluation-harness in process, on any model form)
and ``domain_tasks`` (lm-eval tasks written from held-out documents). Model loading and generation come from
``modeling.inference``, shared with ``modeling.generate``.
"""
