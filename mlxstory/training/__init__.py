"""Training: the loop as a stream of events (`train`, `events`), AdamW and its schedule (`optimizer`), data
parallelism (`distributed`), and what a run leaves on disk (`run_dir`, `checkpoint`, `metrics_log`), plus the
plain-terminal consumer of the events (`console`)."""
