"""The benchmark document as files: results.json, a Markdown table and a PNG chart."""

from __future__ import annotations

import json
from pathlib import Path


def _memory(value: int | None) -> str:
    return "n/a" if value is None else f"{value / 2**20:.0f} MiB"


def label(row: dict) -> str:
    """The framework, and MLX's plain path where it runs beside the fused CPU one."""
    plain = row["framework"] == "mlx" and row.get("path") == "plain" and row["device"] == "cpu"
    return row["framework"] + (" (plain)" if plain else "")


def markdown_table(document: dict) -> str:
    rows = [
        "| preset | framework | device | train tokens/s | ms/step (median) | ms/step (best–worst) "
        "| generate tokens/s | peak memory | RSS growth |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in document["results"]:
        rows.append(
            f"| {r['preset']} | {label(r)} | {r['device']} | {r['train_tokens_per_second']:,.0f} "
            f"| {r['train_ms_per_step']:.0f} "
            f"| {r['train_ms_per_step_best']:.0f}–{r['train_ms_per_step_worst']:.0f} "
            f"| {r['generate_tokens_per_second']:,.0f} | {_memory(r['peak_memory_bytes'])} "
            f"| {_memory(r.get('rss_growth_bytes'))} |"
        )
    lines = ["\n".join(rows), ""]
    for preset, ratio in document.get("ratios", {}).items():
        lines.append(
            f"- {preset}: MLX / PyTorch training tokens/s = {ratio['train_median']:.2f}× (median step), "
            f"{ratio['train_best']:.2f}× (best step); generation {ratio['generate']:.2f}×"
        )
    kinds = dict.fromkeys(f"{label(r)} on {r['device']}: {r['peak_memory_kind']}" for r in document["results"]
                          if r.get("peak_memory_kind"))
    if kinds:
        lines.append("\nPeak memory is, per row: " + "; ".join(kinds) + ".")
    machine = document["machine"]
    lines.append(
        f"\nMachine: {machine['cpu']}, {machine['physical_cores']} physical cores"
        + (f", {machine['gpu']}" if machine.get("gpu") else "")
        + f"; MLX {machine['mlx']}, PyTorch {machine.get('torch')}; load average before/after "
        f"{machine.get('load_average')} / {machine.get('load_average_after')}. {document['method']}."
    )
    return "\n".join(lines) + "\n"


def write_chart(document: dict, path: Path) -> bool:
    """Training and generation tokens/s per preset, MLX beside PyTorch; False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    results = document["results"]
    presets = list(dict.fromkeys(r["preset"] for r in results))
    frameworks = list(dict.fromkeys(label(r) for r in results))
    by_key = {(r["preset"], label(r)): r for r in results}
    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    width = 0.8 / max(1, len(frameworks))
    for axis, field, title in ((axes[0], "train_tokens_per_second", "training tokens/s"),
                               (axes[1], "generate_tokens_per_second", "generation tokens/s (batch 1)")):
        for i, framework in enumerate(frameworks):
            values = [by_key[(p, framework)][field] if (p, framework) in by_key else 0 for p in presets]
            device = next((r["device"] for r in results if label(r) == framework), "")
            xs = [x + i * width for x in range(len(presets))]
            bars = axis.bar(xs, values, width, label=f"{framework} ({device})")
            axis.bar_label(bars, fmt="%.0f", fontsize=8)
        axis.set_xticks([x + width * (len(frameworks) - 1) / 2 for x in range(len(presets))], presets)
        axis.set_title(title)
        axis.legend(fontsize=8)
    figure.suptitle(f"mlxstory benchmark — {document['machine_tag']}")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True


def write_results(document: dict, root: Path) -> Path:
    """Write results.json, results.md and chart.png under root/<machine tag>/; returns the folder."""
    folder = root / document["machine_tag"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.json").write_text(json.dumps(document, indent=2) + "\n")
    (folder / "results.md").write_text(markdown_table(document))
    write_chart(document, folder / "chart.png")
    return folder
