"""One stage table: the pipeline runs its rows, dvc.yaml is generated from them (and is current), and each DVC
stage depends on every repository module its command really imports."""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from launch import dvc
from launch.pipeline import STAGES, PipelineConfig, build_stages, load_config, main, stage_key
from launch.stages import StageArgsConfig, layout, run_name, stage_table

REPO = Path(__file__).resolve().parents[2]


def on_disk() -> dict:
    return yaml.safe_load((REPO / "dvc.yaml").read_text(encoding="utf-8"))


def test_dvc_yaml_is_what_the_table_generates():
    text = (REPO / "dvc.yaml").read_text(encoding="utf-8")
    assert text == dvc.render(dvc.DEMO), f"dvc.yaml is stale: regenerate it with `{dvc.REGENERATE}` and commit it"
    assert f"regenerate with `{dvc.REGENERATE}`" in text.splitlines()[1]
    assert yaml.safe_load(text) == dvc.dvc_stages(dvc.DEMO)  # the hand-written YAML reads back as intended


def test_check_fails_on_a_stale_file_naming_the_fix_and_write_repairs_it(tmp_path, capsys):
    target = tmp_path / "dvc.yaml"
    target.write_text((REPO / "dvc.yaml").read_text().replace("modeling/runs.py", "modeling/gone.py"))
    assert dvc.main(["--check", "--file", str(target)]) == 1
    captured = capsys.readouterr()
    assert "-      - modeling/gone.py" in captured.out and "+      - modeling/runs.py" in captured.out
    assert f"regenerate it: {dvc.REGENERATE}" in captured.err
    assert dvc.main(["--write", "--file", str(target)]) == 0
    assert dvc.main(["--check", "--file", str(target)]) == 0
    assert target.read_text() == (REPO / "dvc.yaml").read_text()


def test_dvc_runs_the_pipelines_commands():
    """What DVC runs is, word for word, what `python -m launch.pipeline` runs for the same config."""
    stages = on_disk()["stages"]
    assert list(stages) == list(STAGES)
    for stage in build_stages(dvc.DEMO):
        argv = stage.command()
        assert argv[0] == sys.executable
        assert shlex.split(stages[stage.name]["cmd"]) == ["python", *argv[1:]]
        assert [next(iter(p)) for p in stages[stage.name].get("params", [])] == [str(p) for p in stage.inputs]


def test_pipeline_stages_are_the_table_rows(tmp_path):
    cfg = load_config(REPO / "configs/pipeline/demo.yaml", {"output": str(tmp_path / "out")})
    table = stage_table(cfg)
    stages = build_stages(cfg)
    assert [s.name for s in table] == [s.name for s in stages] == list(STAGES)
    assert [f.name for f in dataclasses.fields(StageArgsConfig)] == list(STAGES)
    for spec, stage in zip(table, stages):
        assert stage.command() == [sys.executable, "-m", spec.module, *spec.args]
        assert stage.outputs == spec.done and stage.upstream == spec.upstream and stage.clean == spec.clean
        assert stage.inputs == tuple(Path(p) for p in spec.params)
        assert list(spec.args[len(spec.args) - len(getattr(cfg.extra_args, spec.name)):]) == list(
            getattr(cfg.extra_args, spec.name))  # the extra args come last, so they win
        for out in spec.outs:
            assert Path(out.path).is_relative_to(cfg.output)
    assert [s.name for s in stages if s.clean] == ["train"]
    assert table[-1].args[-2:] == ("--max_new_tokens", "40")


def test_upstream_is_exactly_the_stages_whose_outputs_a_command_names():
    table = stage_table(dvc.DEMO)
    for spec in table:
        named = {other.name for other in table if other is not spec for out in other.outs
                 if any(a == out.path or a.startswith(out.path + "/") for a in spec.args)}
        assert named == set(spec.upstream), spec.name
        deps = on_disk()["stages"][spec.name]["deps"]
        for up in spec.upstream:  # and DVC knows: the upstream output is a dependency
            assert any(out.path in deps for out in next(s for s in table if s.name == up).outs)


def test_train_output_path_is_known_before_it_runs(tmp_path):
    cfg = PipelineConfig(output=str(tmp_path))
    assert run_name(cfg) == "tiny-cpu"  # what modeling.train picks itself: the config file's name
    table = {s.name: s for s in stage_table(cfg)}
    run = tmp_path / "train" / "tiny-cpu" / "version_0"
    assert layout(cfg).run == run
    assert table["train"].args[3:5] == ("--name", "tiny-cpu")
    assert str(run / "hf") in table["evaluate"].args
    assert str(run / "checkpoints" / "last.ckpt") in table["generate"].args
    assert table["train"].done == ("train/tiny-cpu/version_0/hf/config.json",
                                   "train/tiny-cpu/version_0/checkpoints/last.ckpt")
    for extra in (["--name", "bs32"], ["--name=bs32"]):
        other = dataclasses.replace(cfg, extra_args=StageArgsConfig(train=tuple(extra)))
        assert run_name(other) == "bs32"
        rows = {s.name: s for s in stage_table(other)}
        assert str(tmp_path / "train" / "bs32" / "version_0" / "hf") in rows["evaluate"].args


def test_raw_input_and_prompts_are_read_data(tmp_path):
    table = {s.name: s for s in stage_table(dvc.DEMO)}
    assert table["curation"].reads == ("data/sample",)  # configs/curation/demo.yaml's input
    assert table["generate"].reads == ("configs/generate/prompts.txt",)
    cfg = dataclasses.replace(dvc.DEMO, extra_args=StageArgsConfig(curation=("--input", "raw/*.jsonl", "--input",
                                                                             "hf://org/set")))
    curation = stage_table(cfg)[0]
    assert curation.reads == ("raw/*.jsonl", "hf://org/set")
    deps = dvc.dvc_stages(cfg)["stages"]["curation"]["deps"]
    assert deps[:2] == ["raw", "common/__init__.py"] and "curation/__init__.py" in deps  # data, then code (sorted)


def test_changed_prompts_rerun_generation(tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("Once upon a time\n")
    cfg = PipelineConfig(output=str(tmp_path / "out"), prompts=str(prompts))
    generate = build_stages(cfg)[-1]
    before = stage_key(generate, tmp_path / "out", {})
    assert stage_key(generate, tmp_path / "out", {}) == before
    prompts.write_text("Once upon a time\nThe contract says\n")
    assert stage_key(generate, tmp_path / "out", {}) != before


def test_repo_imports_follows_every_kind_of_import(tmp_path):
    files = {
        "modeling/__init__.py": "",
        "modeling/a.py": "import os\nfrom . import b\nfrom .sub.c import thing\n\ndef f():\n    import modeling.d\n",
        "modeling/b.py": "from modeling.e import x  # noqa\n",
        "modeling/sub/__init__.py": "",
        "modeling/sub/c.py": "from ..b import y\nfrom curation import util\n",
        "modeling/d.py": "",
        "modeling/e.py": "import torch\n",
        "modeling/unused.py": "",
        "curation/__init__.py": "",
        "curation/__main__.py": "from curation.util import z\n",
        "curation/util.py": "",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert dvc.repo_imports("modeling.a", tmp_path) == sorted(set(files) - {"modeling/unused.py",
                                                                           "curation/__main__.py"})
    assert dvc.repo_imports("curation", tmp_path) == ["curation/__init__.py", "curation/__main__.py",
                                                      "curation/util.py"]


SOURCE_PACKAGES = set(dvc.PACKAGES)


def _imported_at_runtime(modules: list[str]) -> dict[str, set[str]]:
    """Import each module in a fresh interpreter; the repository files then loaded, per module."""
    code = ("import importlib, json, sys; importlib.import_module(sys.argv[1]); "
            "print(json.dumps([getattr(m, '__file__', None) for m in list(sys.modules.values())]))")
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    procs = {m: subprocess.Popen([sys.executable, "-c", code, m], cwd=REPO, env=env, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True) for m in modules}
    found = {}
    for module, proc in procs.items():
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-2000:]
        files = {Path(f).resolve() for f in json.loads(out.splitlines()[-1]) if f and Path(f).is_absolute()}
        # the project's own packages: a virtual environment may live inside the checkout too (.venv/)
        found[module] = {rel for f in files if f.is_relative_to(REPO)
                         and (rel := f.relative_to(REPO).as_posix()).split("/")[0] in SOURCE_PACKAGES}
    return found


@pytest.mark.slow
def test_deps_hold_every_repository_module_the_command_imports():
    table = stage_table(dvc.DEMO)
    entry = {s.name: f"{s.module}.__main__" if s.module == "curation" else s.module for s in table}
    imported = _imported_at_runtime(sorted(set(entry.values())))
    stages = on_disk()["stages"]
    for spec in table:
        deps = set(stages[spec.name]["deps"])
        missing = imported[entry[spec.name]] - deps
        assert not missing, f"{spec.name}: dvc.yaml's deps lack {sorted(missing)}; run {dvc.REGENERATE}"
        assert any(f.startswith(spec.module.split(".")[0] + "/") for f in imported[entry[spec.name]])
    assert {"modeling/train.py", "modeling/runs.py", "modeling/preflight.py", "modeling/data.py",
            "modeling/module.py", "modeling/export.py"} <= set(stages["train"]["deps"])
    assert {"modeling/tokenizer/training.py", "modeling/corpus.py"} <= set(stages["tokenizer"]["deps"])
    assert {"curation/__main__.py", "curation/pipeline.py"} <= set(stages["curation"]["deps"])
    assert "modeling/evaluate.py" in stages["evaluate"]["deps"] and "modeling/generate.py" in stages["generate"]["deps"]
    for stage in stages.values():
        for dep in stage["deps"]:
            assert dep.startswith("out/dvc/") or (REPO / dep).exists(), dep


def test_missing_prompts_file_is_a_usage_error(tmp_path, capsys):
    bad = tmp_path / "p.yaml"
    bad.write_text(f"output: {tmp_path / 'out'}\nprompts: nope.txt\nstages: [generate]\n")
    assert main(["--config", str(bad), "--quiet"]) == 2
    assert "nope.txt does not exist" in capsys.readouterr().err
