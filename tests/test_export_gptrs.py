"""gpt-rs weights both ways: `mlxstory import-gptrs` and `mlxstory export --format gptrs`.

`gptrs_transformer` below is a numpy transcription of liam-ilan/gpt-rs src/model.rs (its variable names,
its order of operations, tch's defaults), written from the Rust source and independent of mlxstory's
model: the imported model must give its logits.
"""

from __future__ import annotations

import json
from pathlib import Path

import mlxstory  # noqa: F401  isort: skip  (loads MKL before mlx.core)
import mlx.core as mx
import numpy as np
import pytest
from typer.testing import CliRunner

from mlxstory.cli import app
from mlxstory.data.gptrs_dataset import read_gptrs_dataset, write_gptrs_dataset
from mlxstory.data.tokenizer import Tokenizer
from mlxstory.generation.generate import generate, stream_generate
from mlxstory.training.checkpoint import load_model

safetensors_numpy = pytest.importorskip("safetensors.numpy")

CONFIG = dict(embedding_size=32, context_length=16, head_count=4, block_count=2, feed_forward_multiplier=2,
              embedding_dropout=0.05, attention_dropout=0.05, feed_forward_dropout=0.05,
              residual_dropout=0.05)


# -- src/model.rs, in numpy ----------------------------------------------------------------------------

def linear(vs: dict, path: str, x: np.ndarray, bias: bool = True) -> np.ndarray:
    """tch nn::Linear: x . ws^T + bs, ws [out_dim, in_dim]."""
    y = x @ vs[f"{path}.weight"].T
    return y + vs[f"{path}.bias"] if bias else y


def layer_norm(vs: dict, path: str, x: np.ndarray) -> np.ndarray:
    """tch nn::layer_norm with Default::default(): eps 1e-5, elementwise affine."""
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + 1e-5) * vs[f"{path}.weight"] + vs[f"{path}.bias"]


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def attention_head(vs: dict, path: str, config: dict, input: np.ndarray) -> np.ndarray:
    head_size = config["embedding_size"] // config["head_count"]
    context_length = config["context_length"]
    omit_mask = np.triu(np.ones((context_length, context_length), bool), 1)
    key = linear(vs, f"{path}.key", input)
    query = linear(vs, f"{path}.query", input)
    value = linear(vs, f"{path}.value", input)
    attention = query @ np.swapaxes(key, -2, -1)
    attention = attention / head_size**0.5
    attention = np.where(omit_mask, -np.inf, attention)
    attention = softmax(attention)  # dropout: identity when not training
    return attention @ value


def multiple_attention_head(vs: dict, path: str, config: dict, input: np.ndarray) -> np.ndarray:
    res = [attention_head(vs, f"{path}.heads.{index}", config, input)
           for index in range(config["head_count"])]
    return linear(vs, f"{path}.projection", np.concatenate(res, -1))


def feed_forward(vs: dict, path: str, input: np.ndarray) -> np.ndarray:
    return linear(vs, f"{path}.output", np.maximum(linear(vs, f"{path}.input", input), 0.0))


def block(vs: dict, path: str, config: dict, input: np.ndarray) -> np.ndarray:
    result = input
    attention = multiple_attention_head(vs, f"{path}.multi_attention_head", config,
                                        layer_norm(vs, f"{path}.layer_norm_1", result))
    result = result + attention
    return result + feed_forward(vs, f"{path}.feed_forward", layer_norm(vs, f"{path}.layer_norm_2", result))


def gptrs_transformer(vs: dict, config: dict, input: np.ndarray) -> np.ndarray:
    """`transformer(&(var_store.root() / "transformer"), config)`, forward_t(input, false); input
    (B, context_length), as gpt-rs always feeds it (generate pads the context)."""
    indices = np.arange(config["context_length"])
    position_embedding = vs["transformer.position_embedding.weight"][indices]
    embedding = position_embedding + vs["transformer.token_embedding.weight"][input]
    x = embedding
    for index in range(config["block_count"]):
        x = block(vs, f"transformer.blocks.{index}", config, x)
    return linear(vs, "transformer.linear_head", layer_norm(vs, "transformer.layer_norm", x), bias=False)


def gptrs_var_store(config: dict, seed: int = 0) -> dict[str, np.ndarray]:
    """The variables `transformer` creates, with random values everywhere (as after training: non-zero
    biases and layer norms too, so that a misplaced one shows)."""
    rng = np.random.default_rng(seed)
    C, V, T = config["embedding_size"], config["vocab_size"], config["context_length"]
    H, F = config["head_count"], config["embedding_size"] * config["feed_forward_multiplier"]
    vs = {}

    def var(name: str, *shape: int, scale: float = 0.2, mean: float = 0.0) -> None:
        vs[f"transformer.{name}"] = (mean + scale * rng.standard_normal(shape)).astype(np.float32)

    var("token_embedding.weight", V, C, scale=1.0)
    var("position_embedding.weight", T, C, scale=1.0)
    for b in range(config["block_count"]):
        p = f"blocks.{b}"
        for n in ("layer_norm_1", "layer_norm_2"):
            var(f"{p}.{n}.weight", C, mean=1.0)
            var(f"{p}.{n}.bias", C)
        for h in range(H):
            for part in ("query", "key", "value"):
                var(f"{p}.multi_attention_head.heads.{h}.{part}.weight", C // H, C)
                var(f"{p}.multi_attention_head.heads.{h}.{part}.bias", C // H)
        var(f"{p}.multi_attention_head.projection.weight", C, C)
        var(f"{p}.multi_attention_head.projection.bias", C)
        var(f"{p}.feed_forward.input.weight", F, C)
        var(f"{p}.feed_forward.input.bias", F)
        var(f"{p}.feed_forward.output.weight", C, F)
        var(f"{p}.feed_forward.output.bias", C)
    var("layer_norm.weight", C, mean=1.0)
    var("layer_norm.bias", C)
    var("linear_head.weight", V, C)
    return vs


def write_config(path: Path, config: dict) -> None:
    """transformer_config.ron as in gpt-rs's example/ (an anonymous struct, no trailing comma)."""
    path.write_text("(\n" + ",\n".join(f"    {k}: {v}" for k, v in config.items()) + "\n)")


# -- fixtures ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def gptrs_files(tmp_path_factory: pytest.TempPathFactory, sample_texts: list[str]) -> dict:
    """What a gpt-rs user has: final.safetensors, transformer_config.ron, the dataset RON."""
    folder = tmp_path_factory.mktemp("gptrs")
    stories = sample_texts[:300]
    tokenizer = Tokenizer.train(stories, vocab_size=300)
    n = len(tokenizer.alphabet) + len(tokenizer.merges)  # gpt-rs's token count: no special tokens
    write_gptrs_dataset(folder / "dataset.ron", tokenizer, tokenizer.encode_batch(stories))
    config = {"vocab_size": n, **CONFIG}
    write_config(folder / "transformer_config.ron", config)
    vs = gptrs_var_store(config)
    safetensors_numpy.save_file(vs, str(folder / "final.safetensors"))  # what tch's VarStore::save writes
    return {"folder": folder, "config": config, "vs": vs, "tokenizer": tokenizer, "n": n, "stories": stories}


def import_args(files: dict, out: Path) -> list[str]:
    folder = files["folder"]
    return ["import-gptrs", str(folder / "final.safetensors"), "--dataset", str(folder / "dataset.ron"),
            "--config", str(folder / "transformer_config.ron"), "--out", str(out)]


@pytest.fixture(scope="module")
def imported(gptrs_files: dict, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("imported") / "run"
    result = CliRunner().invoke(app, import_args(gptrs_files, out))
    assert result.exit_code == 0, result.output
    assert "fresh optimizer state" in result.stdout
    return out


# -- tests -------------------------------------------------------------------------------------------

def test_imported_logits_are_gptrs_logits(gptrs_files: dict, imported: Path) -> None:
    loaded = load_model(imported)
    n, config = gptrs_files["n"], gptrs_files["config"]
    tokens = np.array(gptrs_files["tokenizer"].encode(" ".join(gptrs_files["stories"][-3:])))
    ids = tokens[: 3 * config["context_length"]].reshape(3, -1)
    theirs = gptrs_transformer({k: v.astype(np.float64) for k, v in gptrs_files["vs"].items()}, config, ids)
    ours = np.array(loaded.model(mx.array(ids)))
    assert ours.shape == (*ids.shape, n + 2)  # + <|endoftext|>, <|unk|>
    np.testing.assert_allclose(ours[..., :n], theirs, atol=1e-4, rtol=0)
    assert loaded.model.known_vocab_size == n and loaded.step == 0


def test_generation_starts_from_the_prompt_and_never_samples_special_tokens(gptrs_files: dict,
                                                                            imported: Path) -> None:
    loaded = load_model(imported)
    n, config = gptrs_files["n"], gptrs_files["config"]
    prompt = "Once upon a time"
    # gpt-rs's generate at temperature -> 0: pad the context with id 0 to context_length, take the last real
    # position's logits. The same greedy tokens prove mlxstory starts without <|endoftext|>.
    result = list(loaded.tokenizer.encode(prompt))
    vs = {k: v.astype(np.float64) for k, v in gptrs_files["vs"].items()}
    while len(result) < config["context_length"]:
        context = np.array(result + [0] * (config["context_length"] - len(result)))[None]
        result.append(int(gptrs_transformer(vs, config, context)[0, len(result) - 1].argmax()))
    expected = loaded.tokenizer.decode(result[len(loaded.tokenizer.encode(prompt)):])
    assert generate(loaded.model, loaded.tokenizer, prompt, temperature=0.0,
                    max_tokens=config["context_length"] - len(loaded.tokenizer.encode(prompt))) == expected

    # Make the special tokens the likeliest by far (a constant final-norm output that only their head rows
    # match): still never drawn, greedy or sampled, while the model says it lacks them.
    C = config["embedding_size"]
    head = mx.concatenate([loaded.model.head.weight[:n], mx.full((2, C), 10.0)])
    constant = {"weight": mx.zeros((C,)), "bias": mx.ones((C,))}
    loaded.model.update({"final_norm": constant, "head": {"weight": head}})
    for temperature in (0.0, 1.0):
        tokens = [r.token for r in stream_generate(loaded.model, loaded.tokenizer, prompt, max_tokens=50,
                                                   temperature=temperature, seed=1)]
        assert len(tokens) == 50 and max(tokens) < n
    loaded.model.known_vocab_size = None  # an mlxstory model: <|endoftext|> comes first, and ends the story
    assert [r.token for r in stream_generate(loaded.model, loaded.tokenizer, prompt, temperature=0.0)] == [n]
    result = CliRunner().invoke(app, ["generate", "--run", str(imported), "", "--max-tokens", "5"])
    assert result.exit_code == 1 and "error: this model was imported from gpt-rs" in result.stderr


def test_export_then_import_is_the_identity(gptrs_files: dict, imported: Path, tmp_path: Path) -> None:
    out = tmp_path / "gptrs"
    result = CliRunner().invoke(app, ["export", str(imported), str(out), "--format", "gptrs"])
    assert result.exit_code == 0, result.output
    exported = safetensors_numpy.load_file(str(out / "transformer.safetensors"))
    original = gptrs_files["vs"]
    assert sorted(exported) == sorted(original)
    for name, value in original.items():
        np.testing.assert_array_equal(exported[name], value, err_msg=name)
    assert _ron_fields(out / "transformer_config.ron") == gptrs_files["config"]  # gpt-rs's fields only
    dataset = read_gptrs_dataset(out / "dataset.ron")
    tokenizer = gptrs_files["tokenizer"]
    assert (dataset.tokenizer.alphabet, dataset.tokenizer.merges) == (tokenizer.alphabet, tokenizer.merges)
    assert dataset.stories == []  # only with --with-stories

    again = tmp_path / "again"
    folder = out
    result = CliRunner().invoke(app, ["import-gptrs", str(folder / "transformer.safetensors"), "--dataset",
                                      str(folder / "dataset.ron"), "--config",
                                      str(folder / "transformer_config.ron"), "--out", str(again)])
    assert result.exit_code == 0, result.output
    first, second = (dict(mx.load(str(next((run / "checkpoints").glob("step-000000.safetensors")))))
                     for run in (imported, again))
    assert sorted(first) == sorted(second)
    assert all(mx.array_equal(first[k], second[k]).item() for k in first)


def _ron_fields(path: Path) -> dict:
    from mlxstory.formats import ron

    return dict(ron.load(path))


def test_export_with_stories_writes_the_run_s_stories(imported: Path, gptrs_files: dict,
                                                      tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["export", str(imported), str(tmp_path / "out"), "--format", "gptrs",
                                      "--with-stories"])
    assert result.exit_code == 0, result.output
    dataset = read_gptrs_dataset(tmp_path / "out" / "dataset.ron")
    tokenizer = gptrs_files["tokenizer"]
    assert sorted(map(tokenizer.decode, dataset.stories)) == sorted(gptrs_files["stories"])


def test_training_continues_from_an_imported_run(imported: Path, tmp_path: Path) -> None:
    import shutil

    run = tmp_path / "run"
    shutil.copytree(imported, run)
    info = json.loads((run / "run.json").read_text())
    assert any("fresh optimizer state" in note for note in info["notes"])
    result = CliRunner().invoke(app, ["eval", "--run", str(run), "--json"])
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(app, ["train", "--resume", str(run), "--iterations", "2", "--no-tui"])
    assert result.exit_code == 0, result.output
    loaded = load_model(run)
    assert loaded.step == 2
    assert loaded.model.known_vocab_size is None  # trained here: <|endoftext|> is in its stream now


def _expect_error(args: list[str], out: Path, *needles: str) -> None:
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    for needle in needles:
        assert needle in result.stderr, result.stderr
    assert not out.exists() or not any(out.iterdir())
    assert not list(out.parent.glob(f".{out.name}.tmp-*"))


def test_weights_that_do_not_fit_the_config_are_refused(gptrs_files: dict, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("dataset.ron", "transformer_config.ron", "final.safetensors"):
        (folder / name).write_bytes((gptrs_files["folder"] / name).read_bytes())
    files = {**gptrs_files, "folder": folder}
    out = tmp_path / "run"

    config = dict(gptrs_files["config"])
    write_config(folder / "transformer_config.ron", {**config, "block_count": 3})
    _expect_error(import_args(files, out), out, "missing gpt-rs variable transformer.blocks.2.",
                  "block_count 3")
    write_config(folder / "transformer_config.ron", {**config, "embedding_size": 64})
    _expect_error(import_args(files, out), out, "has shape", "needs", "does not match the weights")
    write_config(folder / "transformer_config.ron", {**config, "vocab_size": config["vocab_size"] + 1})
    _expect_error(import_args(files, out), out, "vocab_size", "belong to different models")

    write_config(folder / "transformer_config.ron", config)
    vs = dict(gptrs_files["vs"])
    vs["transformer.blocks.0.extra.weight"] = np.zeros(3, np.float32)
    safetensors_numpy.save_file(vs, str(folder / "final.safetensors"))
    _expect_error(import_args(files, out), out, "unexpected variable transformer.blocks.0.extra.weight")
    del vs["transformer.blocks.0.extra.weight"], vs["transformer.layer_norm.bias"]
    safetensors_numpy.save_file(vs, str(folder / "final.safetensors"))
    _expect_error(import_args(files, out), out, "missing gpt-rs variable transformer.layer_norm.bias")


def test_an_out_that_is_not_empty_is_refused(gptrs_files: dict, imported: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("keep")
    result = CliRunner().invoke(app, import_args(gptrs_files, out))
    assert result.exit_code == 1 and "error: --out " in result.stderr and "not empty" in result.stderr
    result = CliRunner().invoke(app, ["export", str(imported), str(out), "--format", "gptrs"])
    assert result.exit_code == 1 and "error: OUT " in result.stderr
    assert [p.name for p in out.iterdir()] == ["notes.txt"]


def test_a_gelu_model_cannot_go_to_gptrs(imported: Path, tmp_path: Path) -> None:
    import shutil

    run = tmp_path / "run"
    shutil.copytree(imported, run)
    (run / "model.ron").write_text((run / "model.ron").read_text().replace('"relu"', '"gelu"'))
    result = CliRunner().invoke(app, ["export", str(run), str(tmp_path / "out"), "--format", "gptrs"])
    assert result.exit_code == 1 and "gpt-rs only has relu" in result.stderr
    assert not (tmp_path / "out").exists()


def test_the_dashboard_samples_an_imported_run(imported: Path) -> None:
    from mlxstory.tui.sources import SampleFinished, sample_checkpoint

    items = list(sample_checkpoint(imported, "Once upon a time", title=None, cancelled=lambda: False,
                                   max_tokens=8))
    assert isinstance(items[-1], SampleFinished) and items[-1].note.startswith("8 tokens")
    empty = list(sample_checkpoint(imported, "", title=None, cancelled=lambda: False, max_tokens=8))
    assert "imported from gpt-rs" in empty[-1][0].message
