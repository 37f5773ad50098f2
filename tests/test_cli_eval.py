from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mlxstory.cli import app
from mlxstory.data.token_store import TokenStore
from mlxstory.data.tokenizer import Tokenizer

KEYS = ("loss", "perplexity", "bits_per_byte", "tokens", "bytes")


def invoke(*args: str):
    return CliRunner().invoke(app, ["eval", *args])


def eval_json(*args: str) -> dict:
    result = invoke(*args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_json_covers_the_whole_validation_split(tiny_trained_run: Path):
    result = eval_json("--run", str(tiny_trained_run))
    store = TokenStore.open(tiny_trained_run / "data")
    assert result["tokens"] == len(store.split_tokens("val"))
    assert result["bytes"] == store.split_bytes("val")
    assert result["perplexity"] == pytest.approx(math.exp(result["loss"]))
    assert result["bits_per_byte"] == pytest.approx(
        result["loss"] * result["tokens"] / math.log(2) / result["bytes"]
    )
    # Five steps from random init: well below uniform over the vocabulary, far above a trained model.
    assert 1.0 < result["loss"] < math.log(store.tokenizer.vocab_size)
    assert result["step"] == 5


def test_deterministic_and_independent_of_batch_size(tiny_trained_run: Path):
    first = eval_json("--run", str(tiny_trained_run), "--batch-size", "64")
    second = eval_json("--run", str(tiny_trained_run), "--batch-size", "7")
    assert {k: first[k] for k in KEYS[3:]} == {k: second[k] for k in KEYS[3:]}
    assert second["loss"] == pytest.approx(first["loss"], rel=1e-6)
    assert eval_json("--run", str(tiny_trained_run), "--batch-size", "64")["loss"] == first["loss"]


def test_data_file_is_tokenized_with_the_runs_tokenizer(tiny_trained_run: Path, tmp_path: Path):
    stories = ["Tom saw a big dog. The dog was happy.", "Lily liked to play in the park with her ball."]
    data = tmp_path / "stories.txt"
    data.write_text("\n\n".join(stories) + "\n", encoding="utf-8")
    result = eval_json("--run", str(tiny_trained_run), "--data", str(data))
    tokenizer = Tokenizer.load(tiny_trained_run / "tokenizer.ron")
    assert result["tokens"] == sum(len(tokenizer.encode(s)) + 1 for s in stories)  # + <|endoftext|> each
    assert result["bytes"] == sum(len(s.encode("utf-8")) for s in stories)


def test_max_tokens_scores_a_deterministic_prefix_of_the_split(tiny_trained_run: Path):
    from mlxstory.generation.evaluate import evaluate
    from mlxstory.training.checkpoint import load_model

    store = TokenStore.open(tiny_trained_run / "data")
    val = store.split_tokens("val")
    result = invoke("--run", str(tiny_trained_run), "--max-tokens", "300", "--json")
    assert result.exit_code == 0, result.output
    first = json.loads(result.stdout)
    assert f"the first 300 of {len(val):,} tokens of the validation split" in result.stderr
    text = store.tokenizer.decode(val[:300]).replace("<|endoftext|>", "")
    assert (first["tokens"], first["bytes"]) == (300, len(text.encode("utf-8")))
    loaded = load_model(tiny_trained_run)
    expected = evaluate(loaded.model, val[:300], first["bytes"], start_token=store.tokenizer.eot_id)
    assert first["loss"] == pytest.approx(expected.loss, rel=1e-5)
    assert eval_json("--run", str(tiny_trained_run), "--max-tokens", "300")["loss"] == first["loss"]
    # More than the split holds: the whole split, exactly as without the option.
    whole = eval_json("--run", str(tiny_trained_run), "--max-tokens", str(10 * len(val)))
    assert {k: whole[k] for k in KEYS} == {k: v for k, v in eval_json("--run", str(tiny_trained_run)).items()
                                           if k in KEYS}


def test_max_tokens_cuts_data_files_too(tiny_trained_run: Path, sample_texts: list[str], tmp_path: Path):
    data = tmp_path / "stories.txt"
    data.write_text("\n<|endoftext|>\n".join(sample_texts[:50]), encoding="utf-8")
    result = eval_json("--run", str(tiny_trained_run), "--data", str(data), "--max-tokens", "500")
    assert result["tokens"] == 500 and result["data"].startswith("the first 500 tokens of ")
    tokenizer = Tokenizer.load(tiny_trained_run / "tokenizer.ron")
    ids = [i for story in sample_texts[:50]
           for i in [*tokenizer.encode(story.strip(), on_unknown="ignore"), tokenizer.eot_id]]
    assert result["bytes"] == len(tokenizer.decode(ids[:500]).replace("<|endoftext|>", "").encode("utf-8"))


@pytest.mark.parametrize("value", ["0", "-5"])
def test_max_tokens_below_one_is_one_clear_error(tiny_trained_run: Path, value: str):
    result = invoke("--run", str(tiny_trained_run), "--max-tokens", value)
    assert result.exit_code == 1 and result.stderr == f"error: --max-tokens must be at least 1, got {value}\n"


def test_text_output_names_every_metric(tiny_trained_run: Path):
    result = invoke("--run", str(tiny_trained_run))
    assert result.exit_code == 0, result.output
    assert [line.split()[0] for line in result.stdout.splitlines()] == list(KEYS)
    assert "evaluating on validation split" in result.stderr


def test_a_run_without_a_checkpoint_is_one_clear_error(tiny_trained_run: Path, tmp_path: Path):
    run = tmp_path / "untrained"
    shutil.copytree(tiny_trained_run, run, ignore=shutil.ignore_patterns("checkpoints"))
    result = invoke("--run", str(run))
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr.startswith("error: ") and "no checkpoint" in result.stderr
    assert result.stderr.count("\n") == 1


def test_a_missing_data_file_is_one_clear_error(tiny_trained_run: Path, tmp_path: Path):
    result = invoke("--run", str(tiny_trained_run), "--data", str(tmp_path / "missing.parquet"))
    assert result.exit_code == 1 and result.stderr.startswith("error: ")
    assert "Traceback" not in result.output
