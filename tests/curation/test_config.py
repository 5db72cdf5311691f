"""The shared strict config loader (curation runs and the tokenizer use it)."""

import pytest

from curation.config import ConfigError, RunConfig, build_config, from_dict, merge


def test_unknown_keys_wrong_choices_and_switches_name_the_key():
    with pytest.raises(ConfigError, match=r"config.quality: unknown key\(s\) \['min_char'\].*min_chars"):
        from_dict(RunConfig, {"quality": {"min_char": 3}})
    with pytest.raises(ConfigError, match=r"config.writer.format: must be one of \['parquet', 'jsonl'\], got 'csv'"):
        from_dict(RunConfig, {"writer": {"format": "csv"}})
    with pytest.raises(ConfigError, match=r"config.overwrite: must be true or false, got 'yes'"):
        from_dict(RunConfig, {"overwrite": "yes"})
    with pytest.raises(ConfigError, match=r"language.*backend"):
        from_dict(RunConfig, {"language": {"backend": "cld3"}})


def test_lists_and_comma_strings_become_tuples_and_flags_override_yaml(tmp_path):
    cfg = from_dict(RunConfig, {"input": "a,b", "steps": ["html", "normalize"], "language": {"languages": ["EN"]}})
    assert cfg.input == ("a", "b") and cfg.ordered_steps == ("normalize", "html")
    assert cfg.language.languages == ("en",)
    y = tmp_path / "c.yaml"
    y.write_text("input: [x]\noutput: o\nwriter: {format: jsonl, shard_mb: 8}\n")
    cfg = build_config(y, {"writer": {"format": "parquet", "write_dropped": None}, "output": None})
    assert (cfg.writer.format, cfg.writer.shard_mb, cfg.output) == ("parquet", 8, "o")
    assert merge({"a": {"b": 1}}, {"a": {"c": None}, "d": None}) == {"a": {"b": 1}}


def test_missing_input_or_output_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="no input"):
        build_config(None, {"output": "o"})
    with pytest.raises(ConfigError, match="no output"):
        build_config(None, {"input": ["x"]})
    bad = tmp_path / "bad.yaml"
    bad.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        build_config(bad, {})
    with pytest.raises(ConfigError, match="does not exist"):
        build_config(tmp_path / "missing.yaml", {})


def test_numbers_are_checked():
    with pytest.raises(ConfigError, match=r"config.batch_size: must be a whole number, got '1k'"):
        from_dict(RunConfig, {"batch_size": "1k"})
    with pytest.raises(ConfigError, match=r"config.language.min_score: must be a number, got 'high'"):
        from_dict(RunConfig, {"language": {"min_score": "high"}})
    assert from_dict(RunConfig, {"language": {"min_score": 1}}).language.min_score == 1
