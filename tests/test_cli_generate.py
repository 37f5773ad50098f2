from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mlxstory.cli import app
from mlxstory.generation.generate import generate
from mlxstory.training.checkpoint import load_model

PROMPT = "Once upon a time"


def invoke(*args: str, input: str | None = None):
    return CliRunner().invoke(app, ["generate", *args], input=input)


@pytest.fixture(scope="module")
def loaded(tiny_trained_run: Path):
    return load_model(tiny_trained_run)


def expected_story(loaded, prompt: str, **kwargs) -> str:
    return prompt + generate(loaded.model, loaded.tokenizer, prompt, **kwargs)


def test_stdout_is_only_the_story_the_library_generates(tiny_trained_run, loaded):
    result = invoke("--run", str(tiny_trained_run), "--max-tokens", "40", "--seed", "7", PROMPT)
    assert result.exit_code == 0, result.output
    story = expected_story(loaded, PROMPT, max_tokens=40, seed=7, temperature=0.8)
    assert result.stdout == story + "\n"
    assert "loaded" in result.stderr and "tokens/s" in result.stderr
    assert "loaded" not in result.stdout


def test_same_seed_same_story_and_greedy_ignores_the_seed(tiny_trained_run):
    run = ("--run", str(tiny_trained_run), "--max-tokens", "30", PROMPT)
    assert invoke(*run, "--seed", "1").stdout == invoke(*run, "--seed", "1").stdout
    assert invoke(*run, "--seed", "1").stdout != invoke(*run, "--seed", "2").stdout
    greedy = ("--temperature", "0")
    assert invoke(*run, *greedy, "--seed", "1").stdout == invoke(*run, *greedy, "--seed", "2").stdout


def test_without_a_seed_the_fresh_seed_is_printed_and_reproduces_the_story(tiny_trained_run):
    run = ("--run", str(tiny_trained_run), "--max-tokens", "30", PROMPT)
    first = invoke(*run)
    seed = next(line.split()[1] for line in first.stderr.splitlines() if line.startswith("seed "))
    assert invoke(*run, "--seed", seed).stdout == first.stdout


def test_samples_are_separated_by_a_blank_line(tiny_trained_run, loaded):
    result = invoke("--run", str(tiny_trained_run), "--max-tokens", "20", "--seed", "3",
                    "--num-samples", "2", "--top-k", "20", "--top-p", "0.9", PROMPT)
    assert result.exit_code == 0, result.output
    stories = [expected_story(loaded, PROMPT, max_tokens=20, seed=s, temperature=0.8, top_k=20, top_p=0.9)
               for s in (3, 4)]
    assert result.stdout == stories[0] + "\n\n" + stories[1] + "\n"


def test_text_reaches_a_pipe_while_it_is_generated(tiny_trained_run):
    """A real `mlxstory generate` writing into a pipe, where Python holds 8 KB of output unless flushed:
    the first piece must arrive while most of the story is still to come, not all of it at exit."""
    process = subprocess.Popen(
        [sys.executable, "-m", "mlxstory", "generate", "--run", str(tiny_trained_run), "--max-tokens", "1500",
         "--seed", "5", "--no-stop", PROMPT], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env={k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"})  # as a user's shell has it
    try:
        first = b""
        while len(first) <= len(PROMPT):  # the prompt, then what is there once a generated token arrives
            if not (chunk := os.read(process.stdout.fileno(), 1 << 16)):
                break
            first += chunk
        rest, errors = process.communicate(timeout=120)
    finally:
        process.kill()
    story = first + rest
    assert process.returncode == 0 and "1500 tokens" in errors.decode(), errors.decode()
    assert story.decode().startswith(PROMPT) and story.endswith(b"\n")
    # About 5 KB in all (1,500 tokens take about a second here): unflushed, it would be one read at exit.
    assert len(story) < 8192 and len(first) < len(story) / 2, (len(first), len(story))


@pytest.mark.parametrize("args", [(), ("-",)])
def test_prompt_from_stdin(tiny_trained_run, args):
    result = invoke("--run", str(tiny_trained_run), "--max-tokens", "10", "--seed", "1", *args,
                    input="Tom and Lily\n")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("Tom and Lily") and not result.stdout.startswith("Tom and Lily\n")


def test_json_has_one_object_per_sample(tiny_trained_run):
    result = invoke("--run", str(tiny_trained_run), "--max-tokens", "12", "--seed", "2", "--num-samples", "3",
                    "--no-stop", "--json", PROMPT)
    assert result.exit_code == 0, result.output
    samples = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(samples) == 3
    for sample in samples:
        assert sample["text"].startswith(PROMPT)
        assert sample["tokens"] == 12 and sample["finish_reason"] == "length"
        assert sample["tokens_per_second"] > 0
    assert [s["seed"] for s in samples] == [2, 3, 4]


def test_unknown_prompt_characters_warn_on_stderr(tiny_trained_run):
    result = invoke("--run", str(tiny_trained_run), "--max-tokens", "10", "--seed", "1", "A snowman ☃ said")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("A snowman ☃ said")
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 1 and "<|unk|>" in warnings[0]


def test_a_single_checkpoint_file_works(tiny_trained_run):
    weights = sorted((tiny_trained_run / "checkpoints").glob("step-*[0-9].safetensors"))[-1]
    by_file = invoke("--checkpoint", str(weights), "--max-tokens", "15", "--seed", "4", PROMPT)
    by_run = invoke("--run", str(tiny_trained_run), "--max-tokens", "15", "--seed", "4", PROMPT)
    assert by_file.exit_code == 0, by_file.output
    assert by_file.stdout == by_run.stdout


def error_line(result) -> str:
    assert result.exit_code == 1
    assert result.stdout == "" and "Traceback" not in result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    return lines[0]


def test_a_run_without_a_checkpoint_is_one_clear_error(tiny_trained_run, tmp_path):
    run = tmp_path / "untrained"
    shutil.copytree(tiny_trained_run, run, ignore=shutil.ignore_patterns("checkpoints"))
    assert "no checkpoint" in error_line(invoke("--run", str(run), PROMPT))


@pytest.mark.parametrize(
    "args, expected",
    [
        ((PROMPT,), "--run"),
        (("--run", "does/not/exist", PROMPT), "does not exist"),
        (("--temperature", "-1", PROMPT), "temperature"),
        (("--num-samples", "0", PROMPT), "--num-samples"),
    ],
)
def test_bad_arguments_are_one_error_line(args, expected):
    assert expected in error_line(invoke(*args))
