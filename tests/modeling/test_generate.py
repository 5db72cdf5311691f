"""modeling.generate on tiny models: every saved form, reproducible seeds, the model's own log-probabilities,
eos handling inside a batch, the prompts files, the report, and the errors a user meets first."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from modeling.export import ModelLoadError
from modeling.generate import main, run_generation
from modeling.inference import DecodingSetting, GenerateError, Sample, generate_batch, load_model
from modeling.samples import DEFAULT_PROMPTS, read_prompts, render_report

PROMPTS = ["the patient was given", "the contract says the party", "payment is due within thirty days of the"]


@pytest.fixture
def prompts_file(tmp_path) -> Path:
    path = tmp_path / "prompts.txt"
    path.write_text("\n".join([PROMPTS[0], "", PROMPTS[1], "   ", PROMPTS[2]]) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("form", ["ckpt", "hf", "adapter"])
def test_every_model_form_writes_samples_and_a_report(form, forms, prompts_file, tmp_path):
    out = tmp_path / "run" / "samples.jsonl"
    code = main(
        [
            "--model",
            str(forms[form]),
            "--prompts",
            str(prompts_file),
            "--settings",
            "greedy,t0.9_p0.9",
            "--num-return-sequences",
            "2",
            "--max-new-tokens",
            "6",
            "--batch-size",
            "2",
            "--device",
            "cpu",
            "--output",
            str(out),
        ]
    )
    assert code == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    # greedy gives one sample per prompt, the sampling setting two; blank lines are not prompts
    assert [(r["setting"], r["prompt"], r["sample"]) for r in rows] == (
        [("greedy", p, 0) for p in PROMPTS] + [("t0.9_p0.9_k50", p, i) for p in PROMPTS for i in (0, 1)]
    )
    for r in rows:
        assert 1 <= r["num_tokens"] <= 6 and r["finish"] in ("eos", "length")
        assert r["mean_logprob"] < 0 and isinstance(r["output"], str)
    report = (out.parent / "samples.md").read_text()
    ranked = [float(x) for x in re.findall(r"^## \d+\. (-?\d+\.\d+) ·", report, flags=re.M)]
    assert len(ranked) == len(rows) and ranked == sorted(ranked)  # least confident first
    assert "| greedy | 3 |" in report and "| t0.9_p0.9_k50 | 6 |" in report


def test_the_adapter_is_applied(forms, gpt2_dir):
    base, tok = load_model(gpt2_dir, device="cpu", dtype="float32")
    adapted, _ = load_model(forms["adapter"], device="cpu", dtype="float32")
    ids = tok(PROMPTS[0], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert not torch.allclose(base(ids).logits, adapted(ids).logits, atol=1e-3)


def test_same_seed_same_samples_other_seed_other_samples(hf_model):
    model, tok = hf_model
    settings = [DecodingSetting.parse("t1.0_p1.0_k0"), DecodingSetting.parse("greedy")]

    def run(seed: int) -> list[Sample]:
        return run_generation(
            model, tok, PROMPTS, settings, max_new_tokens=8, num_return_sequences=2, batch_size=2, seed=seed
        )

    first, again, other = run(0), run(0), run(1)
    assert first == again
    sampled = [s.output for s in first if s.setting != "greedy"]
    assert sampled != [s.output for s in other if s.setting != "greedy"]
    assert [s for s in first if s.setting == "greedy"] == [s for s in other if s.setting == "greedy"]
    # seeding per (setting, batch): dropping a setting leaves the other's samples as they were
    alone = run_generation(
        model, tok, PROMPTS, settings[:1], max_new_tokens=8, num_return_sequences=2, batch_size=2, seed=0
    )
    assert alone == [s for s in first if s.setting != "greedy"]


def test_mean_logprob_is_the_models_own_log_probability(hf_model):
    model, tok = hf_model
    # temperature 0.3 changes which tokens are drawn, not how the drawn tokens are scored
    for setting in (DecodingSetting.greedy(), DecodingSetting.parse("t0.3")):
        torch.manual_seed(0)
        samples = generate_batch(model, tok, PROMPTS, setting, max_new_tokens=5)
        torch.manual_seed(0)
        enc = tok(PROMPTS, return_tensors="pt", padding=True)
        out = model.generate(
            **enc, max_new_tokens=5, pad_token_id=tok.pad_token_id, **setting.generate_kwargs()
        )
        width = enc["input_ids"].shape[1]
        for row, sample in enumerate(samples):
            # score the continuation with a plain forward pass over the unpadded prompt + continuation
            prompt = tok(PROMPTS[row], return_tensors="pt")["input_ids"][0]
            new = out[row, width : width + sample.num_tokens]
            ids = torch.cat([prompt, new])[None]
            with torch.no_grad():
                logp = torch.log_softmax(model(ids).logits[0, len(prompt) - 1 : -1].float(), -1)
            expected = logp.gather(-1, new[:, None]).mean().item()
            assert sample.mean_logprob == pytest.approx(expected, abs=1e-4)


def test_a_row_that_ends_early_counts_only_its_own_tokens(hf_model):
    model, tok = hf_model
    greedy = DecodingSetting.greedy()
    first = generate_batch(model, tok, PROMPTS, greedy, max_new_tokens=6)
    enc = tok(PROMPTS, return_tensors="pt", padding=True)
    new = model.generate(**enc, max_new_tokens=6, pad_token_id=tok.pad_token_id, do_sample=False)
    new = new[:, enc["input_ids"].shape[1] :]
    stop_id = int(new[0, 0])  # what prompt 0 writes first: make it the end of text
    others = [i for i in range(1, len(PROMPTS)) if stop_id not in new[i].tolist()]
    assert others, "test setup: some prompt must continue without that token"
    saved = model.generation_config.eos_token_id
    model.generation_config.eos_token_id = stop_id
    try:
        ended = generate_batch(model, tok, PROMPTS, greedy, max_new_tokens=6)
    finally:
        model.generation_config.eos_token_id = saved
    assert ended[0].finish == "eos" and ended[0].num_tokens == 1
    ids = tok(PROMPTS[0], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        expected = torch.log_softmax(model(ids).logits[0, -1].float(), -1)[stop_id].item()
    assert ended[0].mean_logprob == pytest.approx(expected, abs=1e-4)
    for i in others:  # the rows that go on are untouched by the padding after row 0's eos
        assert (ended[i].output, ended[i].num_tokens, ended[i].finish) == (first[i].output, 6, "length")
        assert ended[i].mean_logprob == pytest.approx(first[i].mean_logprob, abs=1e-5)


def test_settings_are_parsed_and_bad_ones_explained():
    assert DecodingSetting.parse("greedy") == DecodingSetting.greedy()
    t = DecodingSetting.parse("t0.7", top_p=0.9, top_k=40)
    assert (t.name, t.do_sample, t.temperature, t.top_p, t.top_k) == ("t0.7_p0.9_k40", True, 0.7, 0.9, 40)
    assert DecodingSetting.parse("t1.0_k0_p0.5").name == "t1_p0.5_k0"
    assert DecodingSetting.parse("t0") == DecodingSetting.greedy()
    for bad, words in [
        ("beam4", "cannot read"),
        ("p0.9", "no temperature"),
        ("t-1", "temperature must be > 0"),
        ("t0.7_p2", "top-p must be in (0, 1]"),
        ("tx", "cannot read the numbers"),
        ("t0.7_t0.8", "cannot read"),
    ]:
        with pytest.raises(GenerateError, match=re.escape(words)) as err:
            DecodingSetting.parse(bad)
        assert "--settings" in str(err.value)


def test_prompts_files_txt_and_jsonl(tmp_path, prompts_file):
    assert read_prompts(prompts_file) == PROMPTS
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text("\n".join(json.dumps({"id": i, "question": p}) for i, p in enumerate(PROMPTS)) + "\n")
    assert read_prompts(jsonl, field="question") == PROMPTS
    with pytest.raises(
        GenerateError, match=r"p\.jsonl:1: no non-empty string field 'prompt'.*--prompt-field"
    ):
        read_prompts(jsonl)
    with pytest.raises(GenerateError, match="no such file"):
        read_prompts(tmp_path / "missing.txt")
    (tmp_path / "p.csv").write_text("prompt\nx\n")
    with pytest.raises(GenerateError, match=r"unknown file type; use \.txt"):
        read_prompts(tmp_path / "p.csv")


def test_shipped_prompts_include_the_seed_domain_prompts():
    prompts = read_prompts(DEFAULT_PROMPTS)
    assert "In accordance with the contract, the party of the first part shall" in prompts
    assert "The diagnosis was confirmed by the following procedure:" in prompts
    assert len(prompts) >= 6 and len(set(prompts)) == len(prompts)


def test_unknown_model_path_is_a_clear_error(tmp_path, prompts_file, capsys):
    assert main(["--model", str(tmp_path / "nope"), "--prompts", str(prompts_file), "--device", "cpu"]) == 2
    assert "is not a model" in capsys.readouterr().err
    not_a_model = tmp_path / "run"
    not_a_model.mkdir()
    (not_a_model / "notes.txt").write_text("x")
    with pytest.raises(ModelLoadError, match=r"config\.json.*adapter_config\.json.*holds \['notes\.txt'\]"):
        load_model(not_a_model, device="cpu")


def test_a_moved_tokenizer_is_named_with_the_flag_to_pass(forms, tokenizer_dir, prompts_file, tmp_path, capsys):
    """A checkpoint records its run's data.tokenizer; when that has moved, the one tokenizer loader says so and
    names --tokenizer, and --tokenizer then opens the checkpoint."""
    from modeling.export import load_checkpoint

    state = load_checkpoint(forms["ckpt"])
    state["datamodule_hyper_parameters"]["tokenizer"] = str(tmp_path / "moved-away")
    moved = tmp_path / "moved.ckpt"
    torch.save(state, moved)
    assert main(["--model", str(moved), "--prompts", str(prompts_file), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert re.search(r"the checkpoint's data\.tokenizer '.*moved-away': no such directory.*point --tokenizer at", err)
    _, tok = load_model(moved, device="cpu", tokenizer=str(tokenizer_dir))
    assert tok.padding_side == "left" and tok.eos_token_id is not None


def test_prompt_longer_than_the_model_is_refused(hf_model):
    model, tok = hf_model
    long_prompt = " ".join(["the patient"] * 40)  # > 64 positions with the new tokens
    with pytest.raises(GenerateError, match=r"more than the model's 64.*--max-new-tokens"):
        generate_batch(model, tok, [long_prompt], DecodingSetting.greedy(), max_new_tokens=10)


def test_report_ranks_by_confidence_and_fences_model_output():
    samples = [
        Sample("p1", "greedy", 0, "fine", 3, -0.5, "eos"),
        Sample("p2", "t0.8_p0.95_k50", 0, "has ``` fences\nand lines", 9, -2.25, "length"),
        Sample("p3\nsecond line", "greedy", 0, "", 1, -1.0, "eos"),
    ]
    md = render_report(samples, "my-model")
    order = [m.group(1) for m in re.finditer(r"^## \d+\. (-?[\d.]+)", md, flags=re.M)]
    assert order == ["-2.250", "-1.000", "-0.500"]
    assert "````text\nhas ``` fences\nand lines\n````" in md  # output cannot close the fence early
    assert "> p3\n> second line" in md
    assert "| greedy | 2 | -0.750 | 2.0 | 2/2 |" in md


def test_continuation_keeps_the_space_a_sentencepiece_decoder_strips():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from modeling.inference import continuation_text

    backend = Tokenizer(
        models.WordLevel({"▁the": 0, "▁party": 1, "▁shall": 2, "<unk>": 3}, unk_token="<unk>")
    )
    backend.pre_tokenizer, backend.decoder = pre_tokenizers.Metaspace(), decoders.Metaspace()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>")
    ids = tok("the party shall")["input_ids"]
    assert tok.decode(ids[2:]) == "shall"  # alone, the new token loses its space ...
    assert continuation_text(tok, ids[:2], ids[2:]) == " shall"  # ... after the prompt it keeps it
