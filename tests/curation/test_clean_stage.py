"""Stage 1's step chain hands the texts from step to step as Python strings (:class:`curation.steps.base.Texts`)
and crosses into Arrow once per batch. These tests hold it to what the steps give one by one on Arrow batches,
each step's own ``__call__``, on real pages, with a step that only takes Arrow batches in the middle."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from curation import columns
from curation.config import RunConfig, from_dict
from curation.dedup import add_keys
from curation.report import StepStats
from curation.stages import EMPTY_AFTER_CLEANING, PARTITION_STEP, CleanStage, make_step, run_step
from curation.steps.base import Texts, live_mask, mark_dropped, runs_on_texts, set_column
from curation.steps.language import LanguageConfig, LanguageFilter
from curation.steps.language.backends import get_detector, remembering
from curation.steps.quality import QualityFilter
from tests.curation.test_step_shortcuts import raw_texts


class ArrowOnlyStamp:
    """A batch callable that is not a :class:`Step`: it sees the Arrow batch, and must see the text as the
    steps before it left it."""

    def __call__(self, batch: pa.Table) -> pa.Table:
        lengths = pc.utf8_length(batch.column("text"))
        return set_column(batch, "seen_chars", lengths)


class CallingFilter(QualityFilter):
    """A step that overrides ``__call__`` to do more than ``apply``: it must get the Arrow batch."""

    def __call__(self, batch: pa.Table) -> pa.Table:
        return set_column(super().__call__(batch), "called", [True] * batch.num_rows, type=pa.bool_())


def _batch(texts: list[str | None]) -> pa.Table:
    reasons = [None if isinstance(t, str) and t.strip() else "empty_text" for t in texts]
    return pa.table({"id": [f"doc-{i:05d}" for i in range(len(texts))],
                     "text": pa.array(texts, type=pa.large_string()),
                     "source": ["test"] * len(texts), columns.DROP_REASON: pa.array(reasons, type=pa.string())})


def _one_by_one(stage: CleanStage, steps: list, batch: pa.Table) -> pa.Table:
    """The chain as it was: every step on the Arrow batch, then the empty-text mark, the keys, the shrink."""
    for step in steps:
        batch = step(batch)
    empty = pc.fill_null(pc.equal(pc.utf8_length(batch.column("text")), 0), False).to_pylist()
    batch = mark_dropped(batch, [EMPTY_AFTER_CLEANING if e else None for e in empty])
    batch = add_keys(batch, "text", stage.num_shards, stage.cfg.step_config(PARTITION_STEP))
    dropped = pc.is_valid(batch.column(columns.DROP_REASON))
    texts = pc.if_else(dropped, pa.scalar(None, pa.large_string()), batch.column("text").cast(pa.large_string()))
    return batch.set_column(batch.schema.get_field_index("text"), "text", texts)


@pytest.fixture(scope="module")
def real_batch() -> pa.Table:
    texts = [*raw_texts()[:1500], "<script>only a script</script>", None, "   "]
    return _batch(texts)


@pytest.mark.parametrize("settings", [
    {"language": {"languages": ["en"]}},  # the defaults, English kept
    {"steps": ["normalize", "html", "urls", "whitespace", "dedup"]},  # no filter before the empty-text mark
])
def test_the_texts_chain_gives_what_the_steps_give_one_by_one(real_batch, settings):
    cfg = from_dict(RunConfig, settings)
    stage = CleanStage(cfg, num_shards=4)
    stats: dict[str, StepStats] = {}
    fast = stage(real_batch, stats)
    reference = _one_by_one(stage, [make_step(spec, cfg) for spec in stage.specs], real_batch)
    assert fast.equals(reference)
    # every step's rows and characters in and out, as run_step counts them in Arrow one step at a time
    arrow_stats: dict[str, StepStats] = {}
    batch = real_batch
    for spec in stage.specs:
        batch = run_step(spec.name, make_step(spec, cfg), batch, "text", arrow_stats)
    counts = ("rows_in", "rows_out", "chars_in", "chars_out")
    assert {n: [getattr(st, c) for c in counts] for n, st in stats.items() if n != "read"} == \
        {n: [getattr(st, c) for c in counts] for n, st in arrow_stats.items()}
    reasons = fast.column(columns.DROP_REASON).to_pylist()
    if "language" in cfg.ordered_steps:
        assert stats["language"].rows_in > stats["language"].rows_out > 0
        assert "language" in reasons
    else:
        assert reasons[-3] == EMPTY_AFTER_CLEANING  # the script-only page
    # the counts are Arrow's: characters are code points, null and blank texts are not live
    lengths = pc.utf8_length(real_batch.column("text"))
    assert stats["read"].chars_out == pc.sum(pc.if_else(pa.array(live_mask(real_batch)), lengths, 0)).as_py()
    assert stats["normalize"].rows_in == sum(live_mask(real_batch)) < len(real_batch)


def test_a_step_that_only_takes_arrow_sees_the_texts_so_far(real_batch):
    cfg = from_dict(RunConfig, {"language": {"languages": ["en"]}})
    stage = CleanStage(cfg, num_shards=2)
    steps = [make_step(spec, cfg) for spec in stage.specs]
    steps.insert(2, ArrowOnlyStamp())  # between html and urls
    steps.insert(4, CallingFilter())
    assert [runs_on_texts(s) for s in steps[:5]] == [True, True, False, True, False]
    stage._steps = steps
    stage.specs = [*stage.specs[:2], stage.specs[0], stage.specs[2], stage.specs[0], *stage.specs[3:]]
    fast = stage(real_batch, {})
    assert fast.equals(_one_by_one(stage, steps, real_batch))
    assert "seen_chars" in fast.column_names and "called" in fast.column_names


def test_texts_round_trip_keeps_a_batch_nothing_changed(real_batch):
    texts = Texts(real_batch, "text")
    assert texts.into(real_batch) is real_batch
    assert texts.live_chars() == (pc.sum(pc.is_null(real_batch.column(columns.DROP_REASON))).as_py(),
                                  pc.sum(pc.if_else(pa.array(live_mask(real_batch)),
                                                    pc.utf8_length(real_batch.column("text")), 0)).as_py())


def test_a_remembering_detector_answers_repeats_from_memory():
    calls: list[str] = []
    inner = get_detector("fasttext")

    class Counting(type(inner)):
        def __init__(self) -> None:  # share the loaded model, count the calls
            self.__dict__.update(inner.__dict__)

        def predict(self, text: str) -> tuple[str, float]:
            calls.append(text)
            return super().predict(text)

    memo = remembering(Counting(), maxsize=4)
    texts = ["The printer on the third floor is out of toner again.", "Der Drucker druckt seit gestern nicht.",
             "The printer on the third floor is out of toner again."]
    assert [memo.predict(t) for t in texts] == [inner.predict(t) for t in texts]
    assert len(calls) == 2  # the repeat came from memory
    step = LanguageFilter(LanguageConfig(languages=("en",)))
    assert step.detector.predict(texts[0]) == inner.predict(texts[0])
