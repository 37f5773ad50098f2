"""`mlxstory export --format hf`: transformers and tokenizers reproduce the mlxstory model and tokenizer."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import mlxstory  # noqa: F401  isort: skip  (loads MKL before mlx.core)
import mlx.core as mx
import numpy as np
import pytest
from typer.testing import CliRunner

from mlxstory.cli import app
from mlxstory.data.token_store import TokenStore
from mlxstory.data.tokenizer import Tokenizer
from mlxstory.export.hf import tokenizer_json
from mlxstory.generation.generate import generate
from mlxstory.training.checkpoint import load_model

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

PROMPT = "Once upon a time, there was a little"


@pytest.fixture(scope="module")
def exported(tiny_trained_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("hf") / "model"
    result = CliRunner().invoke(app, ["export", str(tiny_trained_run), str(out), "--format", "hf"])
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def hf_model(exported: Path):
    model = transformers.AutoModelForCausalLM.from_pretrained(exported, local_files_only=True)
    return model.eval()


def test_transformers_logits_equal_mlxstory_on_held_out_text(tiny_trained_run: Path, hf_model) -> None:
    loaded = load_model(tiny_trained_run)
    val = np.asarray(TokenStore.open(tiny_trained_run / "data").split_tokens("val"))
    ids = val[: 2 * loaded.model_config.context_length].reshape(2, -1).astype(np.int64)  # two full windows
    ours = np.array(loaded.model(mx.array(ids)))
    with torch.no_grad():
        theirs = hf_model(torch.from_numpy(ids)).logits.numpy()
    assert theirs.shape == ours.shape
    np.testing.assert_allclose(theirs, ours, atol=1e-4, rtol=0)


def test_tokenizers_encodes_and_decodes_every_sample_story_as_ours(
    tiny_trained_run: Path, exported: Path, sample_texts: list[str]
) -> None:
    ours = Tokenizer.load(tiny_trained_run / "tokenizer.ron")  # trained on the first 600 stories only
    theirs = tokenizers.Tokenizer.from_file(str(exported / "tokenizer.json"))
    expected = ours.encode_batch(sample_texts, on_unknown="ignore")
    got = [e.ids for e in theirs.encode_batch(sample_texts, add_special_tokens=False)]
    assert got == expected
    assert any(ours.unk_id in ids for ids in expected)  # the later stories hold characters it never saw
    decoded = theirs.decode_batch(got, skip_special_tokens=False)
    assert decoded == [ours.decode(ids) for ids in expected]
    # Back to the text itself, except where <|unk|> stands for characters the tokenizer never saw.
    assert sum(d == t for d, t in zip(decoded, sample_texts, strict=True)) > 2000
    # add_special_tokens (the default) starts with <|endoftext|>, as mlxstory's generation does.
    assert theirs.encode(sample_texts[0]).ids == [ours.eot_id, *expected[0]]


def test_unknown_characters_become_one_unk_each(tmp_path: Path) -> None:
    ours = Tokenizer.train(["the cat sat on the mat.", "a cat and a hat"], vocab_size=30)
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(tokenizer_json(ours)))
    theirs = tokenizers.Tokenizer.from_file(str(path))
    text = 'the ☃☃ cat "sat"\n\non Zoë mat'
    ids = ours.encode(text, on_unknown="ignore")
    assert ids.count(ours.unk_id) == 8  # ☃ ☃ " " \n \n Z ë: one each, never fused
    assert theirs.encode(text, add_special_tokens=False).ids == ids


def test_greedy_generation_gives_the_same_text(tiny_trained_run: Path, exported: Path, hf_model) -> None:
    loaded = load_model(tiny_trained_run)
    tokenizer = transformers.AutoTokenizer.from_pretrained(exported, local_files_only=True)
    inputs = tokenizer(PROMPT, return_tensors="pt")
    new = loaded.model_config.context_length - inputs["input_ids"].shape[1]  # stay inside the positions
    with torch.no_grad():
        output = hf_model.generate(**inputs, do_sample=False, max_new_tokens=new)
    theirs = tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    ours = generate(loaded.model, loaded.tokenizer, PROMPT, max_tokens=new, temperature=0.0)
    assert len(ours) > 20
    assert theirs == ours


def test_auto_classes_and_pipeline_load_the_folder_offline(exported: Path, monkeypatch) -> None:
    import socket

    import huggingface_hub

    def no_network(*args, **kwargs):
        raise OSError("this test has no network")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    model = transformers.AutoModelForCausalLM.from_pretrained(exported)
    tokenizer = transformers.AutoTokenizer.from_pretrained(exported)
    generate = transformers.pipeline("text-generation", model=str(exported))
    assert type(model).__name__ == "GPT2LMHeadModel"
    assert tokenizer(PROMPT)["input_ids"][0] == tokenizer.bos_token_id == model.config.eos_token_id
    text = generate("Once upon a time", max_new_tokens=12, do_sample=False)[0]["generated_text"]
    assert text.startswith("Once upon a time") and len(text) > len("Once upon a time ")


def test_model_card_and_configs(exported: Path) -> None:
    files = {p.name for p in exported.iterdir()}
    assert {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
            "tokenizer_config.json", "README.md"} <= files
    config = json.loads((exported / "config.json").read_text())
    assert config["activation_function"] == "relu" and config["n_inner"] == 4 * config["n_embd"]
    assert config["tie_word_embeddings"] is False
    card = (exported / "README.md").read_text()
    assert "training steps: 5" in card and "600 TinyStories" in card and "bits per byte" in card


def test_out_that_is_not_empty_is_refused_and_left_alone(tiny_trained_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    result = CliRunner().invoke(app, ["export", str(tiny_trained_run), str(out)])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: OUT ") and "not empty" in result.stderr
    assert result.stderr.count("\n") == 1
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temporary folder left beside it


def test_a_checkpoint_that_does_not_fit_its_config_names_the_weight(tiny_trained_run: Path, tmp_path: Path):
    run = tmp_path / "run"
    shutil.copytree(tiny_trained_run, run)
    weights = next((run / "checkpoints").glob("step-*[0-9].safetensors"))
    arrays = dict(mx.load(str(weights)))
    arrays["blocks.1.ln2.bias"] = mx.zeros((3,))
    mx.save_safetensors(str(weights), arrays)
    result = CliRunner().invoke(app, ["export", str(run), str(tmp_path / "out")])
    assert result.exit_code == 1
    assert "error: " in result.stderr and "blocks.1.ln2.bias has shape (3,)" in result.stderr
    assert not (tmp_path / "out").exists()


def test_a_tokenizer_with_two_ids_for_one_text_is_refused() -> None:
    from mlxstory.errors import TokenizerError

    # "abc" made twice: ab+c and a+bc. A tokenizers BPE keys its vocabulary by text, so it cannot hold both.
    tokenizer = Tokenizer(list("abc"), [((0, 1), 3), ((3, 2), 4), ((1, 2), 5), ((0, 5), 6)])
    with pytest.raises(TokenizerError, match="'abc'"):
        tokenizer_json(tokenizer)
