"""lm-evaluation-harness in process, and the domain tasks generated from held-out documents.

Everything is local: a tiny GPT-2 and tokenizer built in the session (conftest), a few dozen documents, task
YAMLs read through lm-eval's own ``TaskManager``; no hub access.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from modeling.evaluation.domain_tasks import (
    MANIFEST_NAME,
    DomainTaskError,
    DomainTasksConfig,
    choice_items,
    cloze_item,
    relocate_tasks,
    split_for_choice,
    write_domain_tasks,
)
from modeling.evaluation.harness import (
    HarnessConfig,
    HarnessError,
    evaluate_model,
    require_lm_eval,
    run_harness,
)
from tests.modeling.conftest import make_docs, write_shards

TASKS = ("domain_cloze", "domain_choice")


def _config(data: Path, out: Path, **kw) -> DomainTasksConfig:
    """Small enough for the test documents (8-40 words) and the tiny model's 64 positions."""
    base = {"min_context_words": 6, "max_context_words": 30, "continuation_words": 4}
    return DomainTasksConfig(data=(str(data),), output=str(out), **{**base, **kw})


@pytest.fixture(scope="module")
def heldout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """36 documents of 8-40 words plus 4 too short for any item (a parquet shard and a jsonl file)."""
    root = write_shards(tmp_path_factory.mktemp("heldout"), make_docs(36, seed=5))
    (root / "short.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in ["a b", "c", "d e f", "g"]))
    return root


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory: pytest.TempPathFactory, heldout: Path) -> Path:
    out = tmp_path_factory.mktemp("tasks")
    write_domain_tasks(_config(heldout, out))
    return out


def _items(task_dir: Path, task: str) -> list[dict]:
    return [json.loads(line) for line in (task_dir / f"{task}.jsonl").read_text().splitlines()]


# ------------------------------------------------------------------------------------- items
def test_cloze_item_cuts_before_the_last_word_and_strips_its_punctuation() -> None:
    item = cloze_item("the party shall pay\nthe invoice.", min_context=3, max_context=50)
    assert item == {"context": "the party shall pay\nthe", "target": " invoice"}
    assert cloze_item("too short", min_context=3, max_context=50) == "too_short"
    # a long document: the target is word max_context + 1, the context its 3 words before it
    assert cloze_item("a b c d e f g", min_context=2, max_context=3) == {"context": "a b c", "target": " d"}


def test_choice_items_hold_the_real_continuation_among_distinct_distractors() -> None:
    docs = [f"doc {i} " + " ".join(f"w{i}_{j}" for j in range(10)) for i in range(6)] + ["tiny"]
    splits = [split_for_choice(d, 3, 5, 3) for d in docs]
    items, skipped = choice_items(splits, num_distractors=3, seed=0)
    assert len(items) == 6 and skipped == {"too_short": 1}
    for item in items:
        assert len(set(item["choices"])) == 4
        assert item["choices"][item["label"]] == splits[item["doc"]][1]
        assert docs[item["doc"]].startswith(item["context"])
    # every document has the same continuation: no distinct distractor, every item skipped and counted
    same = [("ctx", "same words")] * 5
    assert choice_items(same, 2, 0) == ([], {"too_few_distinct_distractors": 5})


def test_tasks_written_with_counts_and_skips(task_dir: Path) -> None:
    manifest = json.loads((task_dir / MANIFEST_NAME).read_text())
    assert manifest["docs"] == 40
    assert manifest["skipped"]["domain_cloze"] == {"too_short": 4}
    assert sum(manifest["skipped"]["domain_choice"].values()) >= 4
    for task in TASKS:
        assert manifest["items"][task] == len(_items(task_dir, task)) > 20
        spec = yaml.safe_load((task_dir / f"{task}.yaml").read_text())
        assert spec["dataset_path"] == "json" and spec["tag"] == ["domain"]
        assert Path(spec["dataset_kwargs"]["data_files"]["test"]) == task_dir / f"{task}.jsonl"


def test_generation_is_deterministic_and_seeded(tmp_path: Path, heldout: Path, task_dir: Path) -> None:
    again = write_domain_tasks(_config(heldout, tmp_path / "again"))
    for task in TASKS:
        assert (task_dir / f"{task}.jsonl").read_bytes() == (again.folder / f"{task}.jsonl").read_bytes()
    other = write_domain_tasks(_config(heldout, tmp_path / "seed1", seed=1, tasks=("choice",)))
    assert other.task_names == ["domain_choice"]
    assert _items(task_dir, "domain_choice") != _items(other.folder, "domain_choice")


def test_no_item_is_an_error_naming_the_options(tmp_path: Path) -> None:
    root = write_shards(tmp_path / "docs", ["one two three", "four five"], n_shards=1)
    with pytest.raises(DomainTaskError, match="min_context_words"):
        write_domain_tasks(DomainTasksConfig(data=(str(root),), output=str(tmp_path / "t")))
    with pytest.raises(DomainTaskError, match="name"):
        write_domain_tasks(DomainTasksConfig(data=(str(root),), output=str(tmp_path / "t"), name="my-domain"))


# ------------------------------------------------------------------------------------- lm-eval
def test_yaml_loads_with_lm_eval_task_manager(task_dir: Path, tmp_path: Path) -> None:
    from lm_eval.tasks import TaskManager

    loaded = TaskManager(include_path=str(task_dir), include_defaults=False).load(["domain"])  # the tag
    tasks = loaded["tasks"]
    assert sorted(tasks) == sorted(TASKS)
    for name, task in tasks.items():
        assert len(task.test_docs()) == len(_items(task_dir, name))
    # a moved folder: relocate_tasks points the YAMLs at the data next to them
    moved = shutil.copytree(task_dir, tmp_path / "moved")
    assert len(relocate_tasks(moved)) == 2
    spec = yaml.safe_load((moved / "domain_cloze.yaml").read_text())
    assert spec["dataset_kwargs"]["data_files"]["test"] == str(moved / "domain_cloze.jsonl")


def test_missing_lm_eval_names_the_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "lm_eval", None)  # import lm_eval now raises ImportError
    with pytest.raises(HarnessError, match=r"pip install 'lm-eval>=0\.4\.13,<0\.5'"):
        require_lm_eval()


def test_unknown_task_is_an_error_naming_it(hf_model, task_dir: Path) -> None:
    cfg = HarnessConfig(model="unused", tasks=("domain_nope",), include_path=(str(task_dir),))
    with pytest.raises(HarnessError, match="domain_nope"):
        evaluate_model(*hf_model, cfg)


@pytest.mark.slow
def test_harness_runs_domain_tasks_in_process(gpt2_dir: Path, task_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "harness.json"
    report = run_harness(HarnessConfig(model=str(gpt2_dir), tasks=TASKS, include_path=(str(task_dir),),
                                       output=str(out), device="cpu", bootstrap_iters=100))
    rows = {(r["task"], r["metric"]): r for r in report["results"]}
    assert set(rows) == {("domain_cloze", "acc"), ("domain_cloze", "perplexity"),
                         ("domain_choice", "acc"), ("domain_choice", "acc_norm")}
    for (task, metric), row in rows.items():
        assert row["n"] == len(_items(task_dir, task))
        if metric == "perplexity":
            assert row["value"] > 1
        else:
            assert 0 <= row["value"] <= 1 and row["stderr"] is not None
    assert json.loads(out.read_text())["results"] == report["results"]
    assert "| domain_choice | acc_norm |" in out.with_suffix(".md").read_text()


@pytest.mark.slow
@pytest.mark.parametrize("form", ["ckpt", "adapter"])
def test_harness_opens_every_model_form(forms: dict[str, Path], form: str, task_dir: Path) -> None:
    report = run_harness(HarnessConfig(model=str(forms[form]), tasks=("domain_choice",), limit=8,
                                       include_path=(str(task_dir),), device="cpu", bootstrap_iters=0))
    assert [(r["metric"], r["n"]) for r in report["results"]] == [("acc", 8), ("acc_norm", 8)]
    assert all(0 <= r["value"] <= 1 for r in report["results"])


@pytest.mark.slow
def test_lm_eval_command_runs_the_task_folder(gpt2_dir: Path, task_dir: Path, tmp_path: Path) -> None:
    """The folder works with the lm_eval command as written in docs/evaluation.md, not only in process."""
    cmd = [sys.executable, "-m", "lm_eval", "--model", "hf", "--model_args", f"pretrained={gpt2_dir}",
           "--device", "cpu", "--tasks", "domain_cloze", "--include_path", str(task_dir), "--limit", "4",
           "--output_path", str(tmp_path / "out")]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "domain_cloze" in run.stdout
