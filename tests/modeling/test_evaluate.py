"""modeling.evaluate: perplexity against the Hugging Face model's own loss, task metrics against values worked
out by hand, every saved model form, and the errors for data without the needed columns."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from modeling.evaluate import EvaluateConfig, EvaluateError, evaluate, main
from modeling.evaluation.perplexity import language_model_metrics
from modeling.evaluation.tasks import TaskMetrics
from modeling.inference import DecodingSetting, GenerateError, generate_batch, load_model, resolve_device
from modeling.packing import PackedBlocks
from tests.modeling.conftest import make_docs, write_shards


@pytest.fixture(scope="module")
def small_shards(tmp_path_factory) -> Path:
    return write_shards(tmp_path_factory.mktemp("small"), make_docs(12, seed=5), n_shards=2)


def hf_loss_perplexity(model, tok, docs: list[str], block_size: int) -> tuple[float, float, int]:
    """Independently of evaluation's loop and loss: the blocks of the one packer (``test_packing`` checks it against
    hand-packed blocks), the HF model's own loss per block, weighted by the number of predicted tokens.
    Returns (perplexity, next-token accuracy, predicted tokens)."""
    total_nll, total, correct = 0.0, 0, 0
    for packed in PackedBlocks([docs], tok, block_size):
        block = torch.tensor(packed)[None]
        if block.shape[1] < 2:
            continue
        with torch.no_grad():
            out = model(input_ids=block, labels=block)
        n = block.shape[1] - 1
        total_nll += out.loss.item() * n
        total += n
        correct += int((out.logits[0, :-1].argmax(-1) == block[0, 1:]).sum())
    return math.exp(total_nll / total), correct / total, total


def test_perplexity_of_one_block_is_exp_of_the_hf_loss(hf_model, tmp_path):
    model, tok = hf_model
    docs = ["the patient was given aspirin.", "the contract says the party shall pay."]
    write_shards(tmp_path / "d", docs, n_shards=1)
    got = language_model_metrics(
        model, tok, sorted((tmp_path / "d").glob("*.parquet")), "text", block_size=64
    )
    ids = torch.tensor(
        [t for d in docs for t in tok(d, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]]
    )
    assert len(ids) < 64  # one short block: exactly the HF loss of the whole sequence
    with torch.no_grad():
        loss = model(input_ids=ids[None], labels=ids[None]).loss.item()
    assert got["perplexity"] == pytest.approx(math.exp(loss), rel=1e-5)
    assert got["loss"] == pytest.approx(loss, rel=1e-5)
    assert (got["tokens"], got["blocks"], got["docs"]) == (len(ids) - 1, 1, 2)


@pytest.mark.parametrize("block_size,batch_size", [(16, 3), (32, 2), (7, 8)])
def test_perplexity_over_many_blocks_matches_the_hf_loss(hf_model, small_shards, block_size, batch_size):
    model, tok = hf_model
    files = sorted(small_shards.glob("*.parquet"))
    docs = [d for f in files for d in pq.read_table(f)["text"].to_pylist()]
    got = language_model_metrics(model, tok, files, "text", block_size=block_size, batch_size=batch_size)
    ppl, acc, tokens = hf_loss_perplexity(model, tok, docs, block_size)
    assert got["tokens"] == tokens  # the short, padded last block is scored on its real tokens only
    assert got["perplexity"] == pytest.approx(ppl, rel=1e-5)
    assert got["next_token_accuracy"] == pytest.approx(acc, abs=1e-6)


@pytest.mark.parametrize("form", ["ckpt", "hf", "adapter"])
def test_every_model_form_through_the_cli(form, forms, small_shards, tmp_path, capsys):
    out = tmp_path / "m" / "metrics.json"
    code = main(
        [
            "--model",
            str(forms[form]),
            "--data",
            str(small_shards),
            "--output",
            str(out),
            "--device",
            "cpu",
            "--batch-size",
            "4",
        ]
        + ([] if form == "ckpt" else ["--block-size", "24"])
    )
    assert code == 0
    result = json.loads(out.read_text())
    assert set(result["metrics"]) == {"perplexity", "next_token_accuracy", "bits_per_byte"}
    assert 1 < result["metrics"]["perplexity"] < 400  # a 320-token vocabulary: uniform guessing is ~320
    lm = result["details"]["language_modeling"]
    if form == "ckpt":  # the training run's block size, read from the checkpoint
        assert (lm["block_size"], lm["block_size_from"]) == (32, "the checkpoint's data.block_size")
    else:
        assert (lm["block_size"], lm["block_size_from"]) == (24, "--block-size")
    assert result["run"]["device"] == "cpu" and result["run"]["dtype"] == "float32"
    assert json.loads(capsys.readouterr().out) == result["metrics"]


def test_adapter_perplexity_is_the_adapted_models(forms, small_shards, gpt2_dir, tmp_path):
    def ppl(model: Path) -> float:
        cfg = EvaluateConfig(
            model=str(model),
            data=(str(small_shards),),
            block_size=24,
            device="cpu",
            output=str(tmp_path / "m.json"),
        )
        return evaluate(cfg)["metrics"]["perplexity"]

    adapter, base = ppl(forms["adapter"]), ppl(gpt2_dir)
    model, tok = load_model(forms["adapter"], device="cpu")
    files = sorted(small_shards.glob("*.parquet"))
    docs = [d for f in files for d in pq.read_table(f)["text"].to_pylist()]
    assert adapter == pytest.approx(hf_loss_perplexity(model, tok, docs, 24)[0], rel=1e-5)
    assert abs(adapter - base) > 1e-3


# ------------------------------------------------------------------------------------- task metrics
def test_exact_match_and_token_f1_match_hand_computed_values():
    m = TaskMetrics(["accuracy", "f1"])
    m.update(
        ["The cat sat.", "a dog", "blue", "the big red house"],
        [["the cat sat"], ["Dog"], ["red"], ["a red house", "a house"]],
    )
    got = m.compute()
    # normalised: "cat sat" == "cat sat"; "dog" == "dog"; "blue" != "red"; "big red house" != "red house"
    assert got["accuracy"] == pytest.approx(2 / 4)
    # F1 per example: 1, 1, 0, and vs the best reference "red house": P = 2/3, R = 2/2, F1 = 0.8
    assert got["f1"] == pytest.approx((1 + 1 + 0 + 0.8) / 4)
    assert set(got) == {"accuracy", "f1"}


def test_bleu_matches_the_textbook_formula():
    one = TaskMetrics(["bleu"])
    one.update(["the cat sat on the mat"], [["the cat sat on a mat"]])
    # clipped n-gram precisions 5/6, 3/5, 2/4, 1/3; equal lengths, so no brevity penalty
    assert one.compute()["bleu"] == pytest.approx((5 / 6 * 3 / 5 * 2 / 4 * 1 / 3) ** 0.25, rel=1e-5)
    short = TaskMetrics(["bleu"])
    short.update(["the cat sat on"], [["the cat sat on the mat"]])
    # every n-gram matches, but the candidate is 4 tokens against 6: brevity penalty exp(1 - 6/4)
    assert short.compute()["bleu"] == pytest.approx(math.exp(1 - 6 / 4), rel=1e-5)
    corpus = TaskMetrics(["bleu"])  # corpus BLEU pools the counts before dividing
    corpus.update(["the cat sat on the mat"], [["the cat sat on a mat"]])
    corpus.update(["the cat sat on"], [["the cat sat on the mat"]])
    pooled = (9 / 10 * 6 / 8 * 4 / 6 * 2 / 4) ** 0.25 * math.exp(1 - 12 / 10)
    assert corpus.compute()["bleu"] == pytest.approx(pooled, rel=1e-5)


def test_rouge_matches_hand_counts_and_reads_any_script():
    m = TaskMetrics(["rouge"])
    m.update(["the cat sat on the mat"], [["the cat lay on the mat"]])
    got = m.compute()
    # unigrams: the x2, cat, on, mat overlap: 5 of 6 each side; bigrams: the cat, on the, the mat: 3 of 5;
    # longest common subsequence "the cat on the mat": 5 of 6
    for key, value in [("rouge1", 5 / 6), ("rouge2", 3 / 5), ("rougeL", 5 / 6)]:
        for part in ("precision", "recall", "fmeasure"):
            assert got[f"{key}_{part}"] == pytest.approx(value, rel=1e-5), f"{key}_{part}"
    greek = TaskMetrics(["rouge"])
    greek.update(["καλημέρα κόσμε"], [["Καλημέρα"]])  # rouge_score's a-z0-9 rule would see two empty strings
    got = greek.compute()
    assert (got["rouge1_precision"], got["rouge1_recall"]) == pytest.approx((1 / 2, 1.0))
    assert got["rouge1_fmeasure"] == pytest.approx(2 / 3)
    best = TaskMetrics(["rouge", "accuracy"])  # several references: the best one counts
    best.update(["the cat sat"], [["a dog ran", "the cat sat"]])
    assert best.compute()["rouge1_fmeasure"] == pytest.approx(1.0) and best.compute()["accuracy"] == 1.0


def test_task_metrics_compare_the_models_generations(hf_model, gpt2_dir, tmp_path):
    model, tok = hf_model
    prompts = [
        "the patient was given",
        "the contract says the party",
        "payment is due within",
        "the first part",
    ]
    answers = [s.output.strip() for s in generate_batch(model, tok, prompts, DecodingSetting.greedy(), 5)]
    rows = [
        {"prompt": prompts[0], "reference": answers[0]},  # right
        {"prompt": prompts[1], "reference": ["zebra quartz", answers[1]]},  # right, second reference
        {"prompt": prompts[2], "reference": "zebra quartz"},  # wrong
        {"prompt": prompts[3], "reference": None},  # unusable: skipped and counted
        {"prompt": prompts[3], "reference": "zebra quartz"},
    ]  # wrong
    data = tmp_path / "qa.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    preds = tmp_path / "out" / "predictions.jsonl"
    result = evaluate(
        EvaluateConfig(
            model=str(gpt2_dir),
            data=(str(data),),
            max_new_tokens=5,
            batch_size=3,
            device="cpu",
            output=str(tmp_path / "metrics.json"),
            predictions=str(preds),
        )
    )
    assert set(result["metrics"]) == {
        "accuracy",
        "f1",
        "bleu",
        "rouge1_fmeasure",
        "rouge1_precision",
        "rouge1_recall",
        "rouge2_fmeasure",
        "rouge2_precision",
        "rouge2_recall",
        "rougeL_fmeasure",
        "rougeL_precision",
        "rougeL_recall",
    }
    assert result["metrics"]["accuracy"] == pytest.approx(2 / 4)
    assert (result["details"]["task"]["examples"], result["details"]["task"]["skipped_rows"]) == (4, 1)
    written = [json.loads(line) for line in preds.read_text().splitlines()]
    assert [w["prediction"] for w in written] == [answers[0], answers[1], answers[2], answers[3]]
    assert written[1]["references"] == ["zebra quartz", answers[1]]


def test_first_line_scores_only_the_first_line():
    from modeling.evaluation.tasks import clean_answer

    assert clean_answer("  Paris\nThe capital of France is Paris.", first_line=True) == "Paris"
    assert clean_answer("  Paris\nmore  ", first_line=False) == "Paris\nmore"


# ------------------------------------------------------------------------------------------- errors
def test_data_without_the_needed_columns_is_a_clear_error(gpt2_dir, tmp_path, small_shards):
    qa = tmp_path / "qa.parquet"
    pq.write_table(pa.table({"question": ["q"], "answer": ["a"]}), qa)
    with pytest.raises(
        EvaluateError, match=r"has columns \['question', 'answer'\].*--text-column.*--prompt-column"
    ):
        evaluate(EvaluateConfig(model=str(gpt2_dir), data=(str(qa),), device="cpu"))
    with pytest.raises(EvaluateError, match=r"needs columns \['prompt', 'reference'\].*next_token_accuracy"):
        evaluate(
            EvaluateConfig(
                model=str(gpt2_dir), data=(str(small_shards),), metrics=("accuracy",), device="cpu"
            )
        )
    with pytest.raises(EvaluateError, match=r"needs documents in column 'text'.*--text-column"):
        evaluate(EvaluateConfig(model=str(gpt2_dir), data=(str(qa),), metrics=("perplexity",), device="cpu"))
    with pytest.raises(EvaluateError, match=r"unknown \['bleurt'\]"):
        evaluate(EvaluateConfig(model=str(gpt2_dir), data=(str(qa),), metrics=("bleurt",), device="cpu"))
    # the right column names make the same file usable
    ok = evaluate(
        EvaluateConfig(
            model=str(gpt2_dir),
            data=(str(qa),),
            prompt_column="question",
            references_column="answer",
            metrics=("f1",),
            max_new_tokens=2,
            device="cpu",
            output=str(tmp_path / "m.json"),
        )
    )
    assert set(ok["metrics"]) == {"f1"}


def test_a_file_no_metric_can_use_is_an_error(gpt2_dir, tmp_path, small_shards):
    stray = tmp_path / "stray.jsonl"
    stray.write_text(json.dumps({"question": "q"}) + "\n")
    with pytest.raises(EvaluateError, match=r"stray\.jsonl has columns \['question'\], none of which"):
        evaluate(EvaluateConfig(model=str(gpt2_dir), data=(str(small_shards), str(stray)), device="cpu"))


def test_unknown_model_path_and_bad_options_are_clear_errors(
    tmp_path, small_shards, gpt2_dir, capsys, monkeypatch
):
    assert main(["--model", str(tmp_path / "nope.ckpt"), "--data", str(small_shards), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "is not a model" in err and "no such file" in err
    assert main(["--model", str(gpt2_dir), "--data", str(tmp_path / "missing")]) == 2
    assert "missing" in capsys.readouterr().err
    with pytest.raises(EvaluateError, match=r"exceeds the model's 64 positions: pass --block-size 64"):
        evaluate(EvaluateConfig(model=str(gpt2_dir), data=(str(small_shards),), block_size=65, device="cpu"))
    with pytest.raises(GenerateError, match="--settings"):
        evaluate(
            EvaluateConfig(model=str(gpt2_dir), data=(str(small_shards),), decoding="beam4", device="cpu")
        )
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(GenerateError, match=r"--device cuda: this machine has no CUDA GPU.*--device cpu"):
        resolve_device("cuda")
    assert resolve_device("auto") == torch.device("cpu")


def test_max_docs_bounds_the_documents_read(hf_model, small_shards):
    model, tok = hf_model
    files = sorted(small_shards.glob("*.parquet"))
    assert language_model_metrics(model, tok, files, "text", block_size=16, max_docs=5)["docs"] == 5


def test_a_plain_text_file_is_one_document(hf_model, gpt2_dir, tmp_path):
    model, tok = hf_model
    doc = "the patient was given aspirin after the myocardial infarction."
    (tmp_path / "notes.txt").write_text(doc, encoding="utf-8")
    # --text-column names a column of the shards; a .txt file is a document whatever it says
    result = evaluate(
        EvaluateConfig(
            model=str(gpt2_dir),
            data=(str(tmp_path / "notes.txt"),),
            text_column="body",
            block_size=64,
            device="cpu",
            output=str(tmp_path / "m.json"),
        )
    )
    assert result["metrics"]["perplexity"] == pytest.approx(
        hf_loss_perplexity(model, tok, [doc], 64)[0], rel=1e-5
    )


def test_a_tokenizer_without_eos_is_refused_naming_the_flag(gpt2_dir, tokenizer_dir, small_shards, tmp_path):
    from tests.modeling.test_tokenizer import no_eos_tokenizer

    no_eos = no_eos_tokenizer(tokenizer_dir, tmp_path / "no-eos")
    with pytest.raises(EvaluateError, match=r"the tokenizer '.*no-eos' has no eos token.*then pass it with --tokenizer"):
        evaluate(EvaluateConfig(model=str(gpt2_dir), data=(str(small_shards),), tokenizer=str(no_eos),
                                block_size=16, device="cpu", output=str(tmp_path / "m.json")))


@pytest.mark.parametrize(("command", "other"), [("evaluate", "generate"), ("generate", "evaluat")])
def test_evaluate_and_generate_share_a_library_not_each_others_command(command, other):
    """Both import ``modeling.inference``; neither imports the other's command (or its library)."""
    import os
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[2]
    code = (f"import sys, modeling.{command}; assert 'modeling.inference' in sys.modules; "
            f"print(sorted(m for m in sys.modules if m.startswith('modeling.{other}')))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=repo, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(repo)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "[]"
