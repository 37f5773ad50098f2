"""Models moving in and out: export to Hugging Face `transformers` (`hf`), and the original gpt-rs's
weights both ways (`gptrs`). Both map the model exactly, with no approximation; see docs/export.md."""
