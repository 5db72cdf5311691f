"""The held-out split's pure functions, without Ray: stable, the right size, duplicates on one side."""

import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest

from curation.config import ConfigError, RunConfig, from_dict
from curation.report import ConservationError, render_markdown
from curation.split import (
    SplitConfig,
    candidate_docs,
    effective_fraction,
    heldout_mask,
    side_counts,
    split_report,
    split_table,
)

IDS = [f"web_pages.jsonl:{i}" for i in range(100_000)]


def test_mask_is_deterministic_across_processes_and_salted():
    mask = heldout_mask(IDS[:2000], 0.1, "s")
    assert mask.dtype == bool and mask.shape == (2000,)
    assert np.array_equal(mask, heldout_mask(IDS[:2000], 0.1, "s"))
    # another interpreter, another PYTHONHASHSEED: Python's hash() would differ, the split must not
    code = ("import sys; from curation.split import heldout_mask; "
            "sys.stdout.write(''.join('1' if m else '0' for m in heldout_mask("
            "[f'web_pages.jsonl:{i}' for i in range(2000)], 0.1, 's')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONHASHSEED": "123", "PATH": ""}, cwd=None).stdout
    assert out == "".join("1" if m else "0" for m in mask)
    assert not np.array_equal(mask, heldout_mask(IDS[:2000], 0.1, "another salt"))


@pytest.mark.parametrize("fraction", [0.01, 0.02, 0.3])
def test_fraction_is_respected_on_100k_ids(fraction):
    share = heldout_mask(IDS, fraction, "curation-heldout-v1").mean()
    sd = (fraction * (1 - fraction) / len(IDS)) ** 0.5
    assert abs(share - fraction) < 5 * sd


def test_raising_the_fraction_only_moves_documents_to_heldout():
    small, large = heldout_mask(IDS[:20_000], 0.02, "s"), heldout_mask(IDS[:20_000], 0.05, "s")
    assert small.sum() > 0 and not (small & ~large).any()


def test_zero_fraction_holds_nothing_out_and_null_keys_stay_in_training():
    assert not heldout_mask(IDS[:1000], 0.0, "s").any()
    assert not heldout_mask([None] * 100, 0.99, "s").any()


def _table(texts, ids=None):
    ids = ids or [f"{i:04d}" for i in range(len(texts))]
    return pa.table({"id": ids, "text": pa.array(texts, pa.large_string())})


def test_split_by_text_puts_identical_documents_on_one_side():
    texts = [f"document number {i % 300}" for i in range(3000)]  # every text ten times, different ids
    train, held = split_table(_table(texts), SplitConfig(heldout_fraction=0.2), 0.2, "text")
    assert train.num_rows + held.num_rows == 3000 and held.num_rows > 0
    assert not set(train.column("text").to_pylist()) & set(held.column("text").to_pylist())
    assert sorted(train.column("id").to_pylist() + held.column("id").to_pylist()) == [f"{i:04d}" for i in range(3000)]


def test_split_by_id_hashes_the_id_not_the_text():
    t = _table(["same text"] * 2000)
    train, held = split_table(t, SplitConfig(heldout_fraction=0.2, key="id"), 0.2, "text")
    assert train.num_rows and held.num_rows  # same text, different ids: both sides (dedup must run first)
    assert held.column("id").to_pylist() == [i for i, m in zip(t.column("id").to_pylist(),
                                                                heldout_mask(t.column("id").to_pylist(), 0.2, SplitConfig().salt)) if m]


def test_fraction_zero_returns_every_row_for_training():
    t = _table(["a b c"] * 10)
    train, held = split_table(t, SplitConfig(heldout_fraction=0.0), 0.0, "text")
    assert train.equals(t) and held.num_rows == 0 and held.schema == t.schema


def test_side_counts_are_documents_and_utf8_bytes():
    assert side_counts(_table(["ab", "é"]), "text") == [2, 4]
    assert side_counts(_table([]), "text") == [0, 0]


def test_the_cap_lowers_the_fraction_to_about_max_docs():
    cfg = SplitConfig(heldout_fraction=0.02, heldout_max_docs=10_000)
    assert effective_fraction(cfg, 2_000) == 0.02  # the demo: 40 documents, under the cap
    assert effective_fraction(cfg, 10_000_000) == pytest.approx(0.001)  # 10M: 10,000, not 200,000
    assert effective_fraction(SplitConfig(heldout_max_docs=None), 10**9) == 0.02
    assert effective_fraction(SplitConfig(heldout_fraction=0.0), 10**9) == 0.0
    records = [{"steps": {"read": {"rows_out": 9}, "language": {"rows_out": 7}}}, {"steps": {}}]
    assert candidate_docs(records, ["normalize", "language"]) == 7
    assert candidate_docs(records, []) == 9


def test_config_rejects_nonsense_and_id_key_without_dedup():
    with pytest.raises(ConfigError, match=r"heldout_fraction is 5.*\[0, 1\)"):
        from_dict(RunConfig, {"split": {"heldout_fraction": 5}})
    with pytest.raises(ConfigError, match="heldout_max_docs is 0"):
        from_dict(RunConfig, {"split": {"heldout_max_docs": 0}})
    with pytest.raises(ConfigError, match="must be one of"):
        from_dict(RunConfig, {"split": {"key": "url"}})
    with pytest.raises(ConfigError, match=r"dedup step does not run.*split\.key: text"):
        from_dict(RunConfig, {"steps": ["normalize"], "split": {"key": "id"}})
    assert from_dict(RunConfig, {"steps": ["normalize"], "split": {"key": "id", "heldout_fraction": 0}})
    cfg = from_dict(RunConfig, {"split": {"heldout_fraction": 0.05, "heldout_max_docs": None}})
    assert (cfg.split.heldout_fraction, cfg.split.heldout_max_docs, cfg.split.key) == (0.05, None, "text")


def test_report_adds_up_or_fails_and_renders():
    cfg = SplitConfig()
    shards = [{"train": [3, 30], "heldout": [1, 5]}, {}, {"train": [2, 20], "heldout": [0, 0]}]
    rep = split_report(cfg, 0.02, shards, rows_out=6)
    assert rep["train"] == {"docs": 5, "text_bytes": 50} and rep["heldout"] == {"docs": 1, "text_bytes": 5}
    assert rep["key"] == "text" and rep["effective_fraction"] == 0.02
    with pytest.raises(ConservationError, match=r"the split wrote 6 documents .* but 7 were kept"):
        split_report(cfg, 0.02, shards, rows_out=7)
    report = {"steps": {}, "dropped": {}, "pii": {}, "split": rep, "rows_in": 6, "rows_out": 6, "chars_in": 0,
              "chars_out": 0, "docs_per_second": None, "duplicates": {"groups": 0}, "languages": {"seen": {}},
              "timings": {"wall_seconds": {}}}
    md = render_markdown(report, [])
    assert "## Held-out split" in md and "| held-out | `heldout/` | 1 | 5 |" in md and "held-out split: 1 docs" in md
