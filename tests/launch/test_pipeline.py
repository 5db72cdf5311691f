"""launch.pipeline: the stamp / skip logic on fake fast stages, and the real demo chain end to end."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from curation.config import ConfigError
from launch.pipeline import STAGES, PipelineConfig, Stage, StageFailed, load_config, main, run_pipeline

REPO = Path(__file__).resolve().parents[2]


def fake_stages(tmp: Path, fail: str | None = None) -> list[Stage]:
    """Three chained stages a -> b -> c; each appends its name to ran.txt and writes its output file.

    Stage names reuse the real ones (the config validates them); each has a config file in ``tmp/conf``.
    """
    out = tmp / "out"
    names = ["curation", "tokenizer", "train"]
    stages = []
    for i, name in enumerate(names):
        conf = tmp / "conf" / f"{name}.yaml"
        if not conf.exists():
            conf.parent.mkdir(parents=True, exist_ok=True)
            conf.write_text("x: 1\n")
        code = (
            "import pathlib,sys; o=pathlib.Path(sys.argv[1]); o.mkdir(parents=True, exist_ok=True); "
            f"(o/'{name}.done').write_text('ok'); "
            f"open(o/'ran.txt','a').write('{name}\\n'); "
            + ("sys.exit(3)" if name == fail else "")
        )
        stages.append(
            Stage(
                name=name,
                command=lambda code=code: [sys.executable, "-c", code, str(out)],
                outputs=(f"{name}.done",),
                inputs=(conf,),
                upstream=tuple(names[:i][-1:]),
            )
        )
    return stages


def ran(tmp: Path) -> list[str]:
    p = tmp / "out" / "ran.txt"
    lines = p.read_text().split() if p.exists() else []
    p.unlink(missing_ok=True)
    return lines


def cfg(tmp: Path, **kw) -> PipelineConfig:
    return PipelineConfig(output=str(tmp / "out"), **kw)


def test_second_run_skips_everything(tmp_path, capsys):
    assert run_pipeline(cfg(tmp_path), fake_stages(tmp_path), stream=False) == dict.fromkeys(
        ["curation", "tokenizer", "train"], "ran"
    )
    assert ran(tmp_path) == ["curation", "tokenizer", "train"]
    result = run_pipeline(cfg(tmp_path), fake_stages(tmp_path), stream=False)
    assert set(result.values()) == {"skipped"}
    assert ran(tmp_path) == []
    assert "stage tokenizer up to date (inputs unchanged), skipping" in capsys.readouterr().out


def test_changed_config_reruns_that_stage_and_downstream_only(tmp_path):
    run_pipeline(cfg(tmp_path), fake_stages(tmp_path), stream=False)
    ran(tmp_path)
    (tmp_path / "conf" / "tokenizer.yaml").write_text("x: 2\n")
    result = run_pipeline(cfg(tmp_path), fake_stages(tmp_path), stream=False)
    assert result == {"curation": "skipped", "tokenizer": "ran", "train": "ran"}
    assert ran(tmp_path) == ["tokenizer", "train"]
    assert set(run_pipeline(cfg(tmp_path), fake_stages(tmp_path), stream=False).values()) == {"skipped"}


def test_changed_command_and_missing_output_rerun(tmp_path):
    run_pipeline(cfg(tmp_path), fake_stages(tmp_path), stream=False)
    ran(tmp_path)
    (tmp_path / "out" / "train.done").unlink()  # output gone: rerun although the key matches
    assert run_pipeline(cfg(tmp_path), fake_stages(tmp_path), stream=False)["train"] == "ran"
    ran(tmp_path)
    stages = fake_stages(tmp_path)
    old = stages[0].command
    stages[0] = Stage(**{**stages[0].__dict__, "command": lambda: [*old(), "--extra-arg"]})
    assert list(run_pipeline(cfg(tmp_path), stages, stream=False).values()) == ["ran"] * 3


def test_force_reruns_all_and_stages_limits(tmp_path):
    run_pipeline(cfg(tmp_path), fake_stages(tmp_path), stream=False)
    ran(tmp_path)
    run_pipeline(cfg(tmp_path, force=True), fake_stages(tmp_path), stream=False)
    assert ran(tmp_path) == ["curation", "tokenizer", "train"]
    result = run_pipeline(cfg(tmp_path, force=True, stages=("tokenizer",)), fake_stages(tmp_path), stream=False)
    assert result == {"tokenizer": "ran"}
    assert ran(tmp_path) == ["tokenizer"]
    # tokenizer's stamp key is unchanged by a forced rerun, so train is still up to date
    assert run_pipeline(cfg(tmp_path), fake_stages(tmp_path), stream=False)["train"] == "skipped"


def test_failing_stage_stops_with_its_name_and_log(tmp_path, capsys):
    with pytest.raises(StageFailed) as err:
        run_pipeline(cfg(tmp_path), fake_stages(tmp_path, fail="tokenizer"), stream=False)
    assert err.value.stage == "tokenizer" and err.value.returncode == 3
    assert err.value.log == tmp_path / "out" / "logs" / "tokenizer.log"
    assert "stage tokenizer failed with exit code 3" in str(err.value)
    assert "stage tokenizer FAILED" in capsys.readouterr().err
    assert ran(tmp_path) == ["curation", "tokenizer"]  # train never started
    assert not (tmp_path / "out" / ".stamps" / "tokenizer.json").exists()
    # next time, the failed stage reruns (no stamp) and the good one is skipped
    result = run_pipeline(cfg(tmp_path), fake_stages(tmp_path), stream=False)
    assert result == {"curation": "skipped", "tokenizer": "ran", "train": "ran"}


def test_main_returns_the_failed_stages_exit_code(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("launch.pipeline.build_stages", lambda c: fake_stages(tmp_path, fail="train"))
    assert main(["--output", str(tmp_path / "out"), "--quiet"]) == 3
    err = capsys.readouterr().err
    assert "error: stage train failed with exit code 3; its log is" in err
    assert str(tmp_path / "out" / "logs" / "train.log") in err


def test_missing_stage_config_is_a_usage_error(tmp_path, capsys):
    bad = tmp_path / "p.yaml"
    bad.write_text(f"output: {tmp_path / 'out'}\ntokenizer_config: nope.yaml\nstages: [tokenizer]\n")
    assert main(["--config", str(bad), "--quiet"]) == 2
    assert "nope.yaml does not exist" in capsys.readouterr().err


def test_config_is_strict(tmp_path):
    bad = tmp_path / "p.yaml"
    bad.write_text("outptu: x\n")
    with pytest.raises(ConfigError, match="valid keys"):
        load_config(bad, {})
    with pytest.raises(ConfigError, match="valid stages"):
        load_config(None, {"stages": "curation,tokeniser"})
    assert main(["--config", str(bad)]) == 2
    c = load_config(REPO / "configs/pipeline/demo.yaml", {"stages": "train,evaluate", "force": True})
    assert c.stages == ("train", "evaluate") and c.force and c.output == "out/pipeline-demo"
    assert c.stages[0] in STAGES


def test_demo_yaml_starts_with_its_command():
    first = (REPO / "configs/pipeline/demo.yaml").read_text().splitlines()[0]
    assert first == "# python -m launch.pipeline --config configs/pipeline/demo.yaml"


@pytest.mark.slow
@pytest.mark.ray
def test_demo_pipeline_end_to_end_then_all_skipped(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(REPO)  # the demo config's paths are relative to the repository root
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    out = tmp_path / "demo"
    extra = tmp_path / "fast.yaml"
    # small settings: the demo YAML up to its extra_args, then faster ones (a repeated key would be invalid)
    data = (REPO / "configs/pipeline/demo.yaml").read_text().split("extra_args:")[0]
    data += (
        "extra_args:\n"
        "  curation: [--num-cpus, '1']\n"
        "  tasks: []\n"
        "  tokenizer: [--vocab-size, '400', --model, bpe]\n"
        "  train: [--trainer.max_steps, '6', --trainer.val_check_interval, '3']\n"
        "  evaluate: [--max-docs, '50']\n"
        "  generate: [--max-new-tokens, '8', --settings, greedy]\n"
    )
    extra.write_text(data)

    assert main(["--config", str(extra), "--output", str(out), "--quiet"]) == 0
    first = capsys.readouterr().out
    assert "ran: curation, tasks, tokenizer, tokenize, train, evaluate, generate" in first
    report = json.loads((out / "curated/report.json").read_text())
    assert report["rows_out"] > 0 and f"{report['rows_out']:,} kept" in first
    tokens = json.loads((out / "tokens/manifest.json").read_text())  # training read these, tokenizing nothing
    assert tokens["splits"]["data"]["docs"] == report["split"]["train"]["docs"] and "token shards: data " in first
    assert not (out / "token-cache").exists()
    stats = json.loads((out / "tokenizer/train_stats.json").read_text())
    assert stats["vocab_size"] <= 400 and f"vocab size: {stats['vocab_size']}" in first
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["metrics"]["perplexity"] > 1 and metrics["metrics"]["bits_per_byte"] > 0
    # evaluation scored the held-out split, never a training document, and ran a harness task on it
    assert all("/curated/heldout/" in f for f in metrics["run"]["data"])
    held = report["split"]["heldout"]["docs"]
    assert held > 0 and f"held-out ({held} documents never trained on): bits per byte " in first
    cloze = [r for r in metrics["harness"]["results"] if r["task"] == "domain_cloze" and r["metric"] == "acc"]
    assert cloze and 0 <= cloze[0]["value"] <= 1 and "harness domain_cloze" in first
    assert (out / "samples.jsonl").read_text().strip() and "sample (greedy)" in first
    assert sorted(p.name for p in (out / "train").glob("*/version_*")) == ["version_0"]
    assert (out / "logs/train.log").read_text().startswith("$ ")

    assert main(["--config", str(extra), "--output", str(out), "--quiet"]) == 0
    second = capsys.readouterr().out
    assert "ran: nothing (everything up to date)" in second
    for stage in STAGES:
        assert f"stage {stage} up to date (inputs unchanged), skipping" in second
