"""The step registry is the one place that knows the steps: a step added there (and nowhere else) is parsed from
the config, run by the pipeline in its stage and counted by the report; the docs say what the registry says."""

import dataclasses
import json
import re
import sys
import types
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from common.cli import parse
from curation import __main__ as cli
from curation import columns
from curation.config import ConfigError, RunConfig, from_dict, run_config_class
from curation.dedup import DedupConfig, add_keys
from curation.pipeline import CleanStage
from curation.report import StepStats
from curation.steps import registry
from curation.steps.base import FilterStep, set_column
from curation.steps.registry import CLEAN, SHARD, Flag, StepSpec

REPO = Path(__file__).resolve().parents[2]
ORDER = ("normalize", "html", "urls", "whitespace", "quality", "language", "pii", "dedup")


# ------------------------------------------------------------------------------- two toy steps, in the test only


@dataclasses.dataclass(frozen=True)
class SpamConfig:
    word: str = "lottery"
    """Texts holding this word are dropped as ``spam``."""


class SpamFilter(FilterStep):
    """A stage-1 filter. It fails the run if it ever sees a batch after the shuffle."""

    cfg: SpamConfig

    def reason(self, text: str) -> str | None:
        return "spam" if self.cfg.word in text.lower() else None

    def __call__(self, batch: pa.Table) -> pa.Table:
        assert columns.SHARD not in batch.column_names, "a clean step ran after the shuffle"
        return super().__call__(batch)


@dataclasses.dataclass(frozen=True)
class StampConfig:
    pass


class Stamper:
    """A stage-2 step: writes what it saw into its own column (shuffle done? dedup before it?)."""

    def __init__(self, cfg: StampConfig, text_column: str = "text") -> None:
        self.text_column = text_column

    def __call__(self, batch: pa.Table) -> pa.Table:
        seen = (f"shuffled={columns.SHARD in batch.column_names},"
                f"deduped={columns.DUP_COUNT in batch.column_names}")
        return set_column(batch, "stamp", [seen] * batch.num_rows, type=pa.string())


SPAM = StepSpec("spam", CLEAN, SpamConfig, SpamFilter, drop_reasons=("spam",),
                flags=(Flag("--spam-word", "word", "drop texts with this word"),))
STAMP = StepSpec("stamp", SHARD, StampConfig, Stamper, columns=("stamp",))


def _with_toys() -> tuple[StepSpec, ...]:
    """The registry with ``spam`` after ``quality`` and ``stamp`` after ``dedup``: what adding two lines to
    :data:`registry.STEPS` would give."""
    out: list[StepSpec] = []
    for spec in registry.STEPS:
        out.append(spec)
        out += {"quality": [SPAM], "dedup": [STAMP]}.get(spec.name, [])
    return tuple(out)


ToyRunConfig = run_config_class(_with_toys())


# ------------------------------------------------------------------------------------------ the registry itself


def test_registry_order_and_stages():
    assert tuple(s.name for s in registry.STEPS) == ORDER
    assert [s.phase for s in registry.STEPS] == [CLEAN] * 7 + [SHARD]
    assert RunConfig.step_specs == registry.STEPS
    assert RunConfig().steps == ORDER and RunConfig().ordered_steps == ORDER
    cfg = RunConfig(steps=("pii", "html", "dedup", "normalize"))
    assert cfg.ordered_steps == ("normalize", "html", "pii", "dedup")
    assert [s.name for s in cfg.selected_steps(CLEAN)] == ["normalize", "html", "pii"]
    assert [s.name for s in cfg.selected_steps(SHARD)] == ["dedup"]
    assert cfg.reserved_columns == frozenset(columns.INTERNAL) | {columns.PII_COUNTS}
    assert [f.name for f in dataclasses.fields(RunConfig)][-len(ORDER):] == list(ORDER)  # a section per step


def test_every_registered_step_is_a_batch_function_that_keeps_its_promises():
    """Each step, built as the registry says and called on a batch without Ray, keeps every row, adds only
    the columns it declares (or internal ones) and marks only the reasons it declares."""
    texts = ["", "hi", "A perfectly ordinary English sentence about routers.", "<p>Hello <b>world</b> &amp; more</p>",
             "A perfectly ordinary English sentence about routers.", "Mail dr.smith@example.com today, Dr. Smith."]
    batch = pa.table({"id": [str(i) for i in range(len(texts))], "text": texts})
    marked: set[str] = set()
    for spec in registry.STEPS:
        step_in = add_keys(batch, "text", 1, DedupConfig()) if spec.phase == SHARD else batch
        out = spec.make(spec.config(), "text")(step_in)
        assert out.num_rows == batch.num_rows, spec.name
        added = set(out.column_names) - set(step_in.column_names)
        assert added <= set(spec.columns) | set(columns.INTERNAL), (spec.name, added)
        reasons = set(out.column(columns.DROP_REASON).to_pylist()) - {None} if columns.DROP_REASON in added else set()
        assert reasons <= set(spec.drop_reasons), (spec.name, reasons)
        marked |= reasons
    assert {"too_short", "too_few_words", "duplicate"} <= marked  # the batch gave the filters work


def test_a_registry_the_pipeline_cannot_run_is_refused():
    steps = list(registry.STEPS)
    with pytest.raises(ValueError, match="stage-1 steps come first"):
        registry.check([*steps, SPAM])
    with pytest.raises(ValueError, match="unique"):
        registry.check([*steps[:2], steps[0]])
    with pytest.raises(ValueError, match="must start with -- and set a field"):
        registry.check([dataclasses.replace(SPAM, flags=(Flag("--spam-words", "words", "x"),))])
    with pytest.raises(ValueError, match=r"\['reader'\] are taken by run options"):
        run_config_class([dataclasses.replace(SPAM, name="reader")])


def test_docs_step_table_is_the_registry():
    docs = (REPO / "docs" / "curation-steps.md").read_text(encoding="utf-8")
    table = registry.markdown_table()
    assert table in docs, f"docs/curation-steps.md: replace its step table with\n{table}"
    page = (REPO / "docs" / "curation.md").read_text(encoding="utf-8")
    steps_section = page.split("\n## Steps\n", 1)[1].split("\n## ", 1)[0]
    assert tuple(re.findall(r"^\| `(\w+)` \|", steps_section, flags=re.M)) == ORDER


def test_the_docs_example_step_works_as_written(monkeypatch):
    """docs/curation-steps.md's example: its file, its registry entry and its test, run as they are printed."""
    docs = (REPO / "docs" / "curation-steps.md").read_text(encoding="utf-8")
    section = docs.split("## Adding a step", 1)[1].split("\n## ", 1)[0]
    module_code, entry, test_code = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    module = types.ModuleType("curation.steps.symbols")
    monkeypatch.setitem(sys.modules, module.__name__, module)
    exec(compile(module_code, "docs/curation-steps.md", "exec"), module.__dict__)
    spec = eval(entry.strip().rstrip(","), {**vars(registry), **module.__dict__})
    namespace = {**module.__dict__, "pa": pa, "columns": columns}
    exec(test_code, namespace)
    namespace["test_symbol_filter_marks_ascii_art"]()
    steps = [s for s in registry.STEPS for s in ([s, spec] if s.name == "quality" else [s])]
    cfg = from_dict(run_config_class(steps), {"steps": ["symbols", "normalize"], "symbols": {"max_share": 0.2}})
    assert cfg.ordered_steps == ("normalize", "symbols") and cfg.step_config("symbols").max_share == 0.2
    with pytest.raises(ConfigError, match=r"config.symbols: symbols.max_share must be in \[0, 1\], got 2"):
        from_dict(run_config_class(steps), {"symbols": {"max_share": 2}})
    stats: dict[str, StepStats] = {}
    out = CleanStage(cfg, num_shards=1)(pa.table({"id": ["1", "2"], "text": ["Plain words.", "|+|+|+|"]}), stats)
    assert out.column(columns.DROP_REASON).to_pylist() == [None, "too_many_symbols"]
    assert list(stats) == ["read", "normalize", "symbols"]


# ------------------------------------------------------------------------------- a new step is one registry entry


def test_a_registered_step_gets_a_config_section_a_flag_and_its_place():
    assert ToyRunConfig().ordered_steps == (*ORDER[:5], "spam", *ORDER[5:8], "stamp")
    cfg = from_dict(ToyRunConfig, {"steps": ["stamp", "spam", "normalize"], "spam": {"word": "casino"}})
    assert cfg.step_config("spam") == SpamConfig("casino") and cfg.ordered_steps == ("normalize", "spam", "stamp")
    assert [s.name for s in cfg.selected_steps(CLEAN)] == ["normalize", "spam"]
    assert cfg.reserved_columns == frozenset(columns.INTERNAL) | {"stamp"}
    with pytest.raises(ConfigError, match=r"config.spam: unknown key\(s\) \['words'\]; valid keys are \['word'\]"):
        from_dict(ToyRunConfig, {"spam": {"words": "x"}})
    with pytest.raises(ConfigError, match="valid steps are normalize,html,urls,whitespace,quality,spam,language,"
                                          "pii,dedup,stamp"):
        from_dict(ToyRunConfig, {"steps": ["spelling"]})
    with pytest.raises(ConfigError, match=r"unknown step\(s\) \['spam'\]"):
        from_dict(RunConfig, {"steps": ["spam"]})  # the real registry has no such step


def test_a_registered_flag_reaches_the_step_config():
    cfg = parse(cli.command(ToyRunConfig), ["--spam-word", "casino", "--languages", "en,de", "--input", "x",
                                            "--output", "o"]).config
    assert cfg.spam == SpamConfig("casino") and cfg.language.languages == ("en", "de")
    # every option of a registered step is also a dotted flag, without declaring anything
    cfg = parse(cli.command(ToyRunConfig), ["--spam.word=lottery", "--input", "x", "--output", "o"]).config
    assert cfg.spam == SpamConfig("lottery")


def test_clean_stage_runs_the_registered_clean_steps_in_order_without_ray():
    cfg = from_dict(ToyRunConfig, {"steps": ["whitespace", "spam", "normalize", "stamp"]})
    stage = CleanStage(cfg, num_shards=2)
    batch = pa.table({"id": ["a", "b", "c"], "text": ["Win  the LOTTERY now", "A fine   text", None]})
    stats: dict[str, StepStats] = {}
    out = stage(batch, stats)
    assert list(stats) == ["read", "normalize", "whitespace", "spam"]  # stamp runs in stage 2, not here
    assert out.column(columns.DROP_REASON).to_pylist() == ["spam", None, None]
    assert stats["spam"].rows_in - stats["spam"].rows_out == 1


# ------------------------------------------------------------------------------------- end to end, through Ray


@pytest.mark.ray
@pytest.mark.slow
def test_the_pipeline_runs_a_registered_step_in_its_stage_and_the_report_counts_it(ray_local, tmp_path):
    from curation.pipeline import run

    src = tmp_path / "in"
    src.mkdir()
    texts = ["Our router drops the connection every night since the update.",
             "You won the LOTTERY, send your bank details to claim the prize today.",
             "Our router drops the connection every night since the update.",
             "The billing portal charged me twice for the same month again.",
             "Claim your lottery prize now before the offer expires tonight."]
    rows = [{"text": t, "stamp": "theirs", "lang": "xx", "pii_counts": i} for i, t in enumerate(texts)]
    (src / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    cfg = from_dict(ToyRunConfig, {"input": [str(src)], "output": str(tmp_path / "out"), "progress": False,
                                   "steps": ["normalize", "spam", "dedup", "stamp"],
                                   "writer": {"num_shards": 2, "write_dropped": True}})
    report = run(cfg)
    assert list(report["steps"]) == ["normalize", "spam", "dedup", "stamp"]
    assert report["dropped"] == {"spam": 2, "duplicate": 1}
    assert report["steps"]["spam"]["rows_dropped"] == 2 and report["steps"]["stamp"]["rows_in"] == 2
    assert report["rows_in"] == 5 == report["rows_out"] + 3
    assert report["languages"] == {"kept": {}, "seen": {}} and report["pii"] == {}  # no step wrote lang / pii
    out = pq.read_table(tmp_path / "out" / "data")
    # the columns steps add come last, in registry order (``lang`` and ``pii_counts`` are the input's own here)
    assert out.column_names == ["id", "text", "source", "input_stamp", "lang", "pii_counts", "stamp"]
    assert set(out.column("stamp").to_pylist()) == {"shuffled=True,deduped=True"}
    assert set(out.column("input_stamp").to_pylist()) == {"theirs"}  # the input's column of that name is kept
    assert "| spam | 5 | 3 | 2 |" in (tmp_path / "out" / "report.md").read_text(encoding="utf-8")
