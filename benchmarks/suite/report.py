"""The suite's outputs: a markdown table, a CSV with one row per measurement, a bar chart."""

from __future__ import annotations

import csv
import math
from pathlib import Path

from benchmarks.suite import flops

COLUMNS = ("recipe", "backend", "variant", "status", "s_per_epoch", "samples_per_s", "speedup",
           "time_to_target_s", "time_to_target", "target", "target_speedup", "epochs_run",
           "first_epoch_s", "final_metric", "final_metric_name", "peak_rss_mib", "gflops", "pct_peak",
           "repeats", "s_per_epoch_repeats", "s_per_epoch_scaled", "wall_s", "cpu_s", "note", "error")


def _num(value, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.{digits}g}"


def _cells(row: dict) -> list[str]:
    base = [row["recipe"], row["backend"], row["variant"]]
    if row["status"] != "ok":
        what = "skipped" if row["status"] == "skipped" else "**error**"
        return base + [what, "", "", "", "", "", "", row.get("error") or row.get("note", "")]
    speedup = f"**{row['speedup']:.1f}x**" if row.get("speedup") else ""
    if row.get("target_speedup"):
        speedup += f" ({row['target_speedup']:.1f}x to target)"
    gflops = (f"{row['gflops']:.1f} ({row['pct_peak']:.0f}%)" if row.get("pct_peak") is not None
              else f"{row['gflops']:.1f}" if row.get("gflops") else "")
    return base + [_num(row["s_per_epoch"]), _num(row["samples_per_s"]), speedup,
                   row["time_to_target_text"], f"{row['final_metric']:.4f}", f"{row['peak_rss_mib']:,.0f}",
                   gflops, row.get("note", "")]


def fastest(rows: list[dict]) -> list[str]:
    """One line per recipe: the backend where the chapter's epoch is shortest."""
    lines = []
    for recipe in dict.fromkeys(r["recipe"] for r in rows):
        done = [r for r in rows if r["recipe"] == recipe and r["status"] == "ok"]
        chapter = [r for r in done if r["variant"] == "chapter"]
        if not chapter:
            lines.append(f"- {recipe}: no chapter measurement succeeded")
            continue
        best = min(chapter, key=lambda r: r["s_per_epoch"])
        text = (f"- **{recipe}: {best['backend']}**, {_num(best['s_per_epoch'])} s/epoch "
                f"({_num(best['samples_per_s'])} samples/s)")
        if best.get("speedup"):
            text += f", {best['speedup']:.1f}x its naive port on {best['backend']}"
        reference = next((r for r in done if r["variant"] == "naive" and r["backend"] == "tensorflow"), None)
        if reference and best["backend"] != "tensorflow":
            text += (f", {reference['s_per_epoch'] / best['s_per_epoch']:.1f}x the naive port on "
                     "tensorflow (Keras's default backend)")
        if best.get("time_to_target") is not None:
            text += f"; {best['target']} in {best['time_to_target_text']}"
        lines.append(text)
    return lines


def checks(rows: list[dict]) -> list[str]:
    """The issue's targets: chapter at least as fast as naive everywhere; XOR and churn >= 10x."""
    paired = [r for r in rows if r["variant"] == "chapter" and r.get("speedup")]
    if not paired:
        return []
    slower = [f"{r['recipe']} on {r['backend']} ({r['speedup']:.2f}x)" for r in paired if r["speedup"] < 1]
    lines = ["- chapter at least as fast per epoch as the naive port on every backend measured: "
             + ("yes" if not slower else "**no**: " + ", ".join(slower))]
    for recipe in ("xor", "churn"):
        mine = [r for r in paired if r["recipe"] == recipe]
        if mine:
            parts = ", ".join(f"{r['backend']} {r['speedup']:.1f}x" for r in mine)
            verdict = "met" if all(r["speedup"] >= 10 for r in mine) else "not met everywhere"
            lines.append(f"- {recipe} >= 10x faster per epoch than its naive port: {parts} ({verdict})")
    return lines


def markdown(rows: list[dict], peak: dict, heading: str) -> str:
    header = ["recipe", "backend", "variant", "s/epoch", "samples/s", "speed-up (naive / chapter)",
              "time to target", "final metric", "peak RSS MiB", "GFLOP/s (% of peak)", "notes"]
    lines = [heading, "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cells(r)) + " |" for r in rows]
    targets = {r["recipe"]: r.get("target") for r in rows if r.get("target")}
    lines += ["", "Targets: " + "; ".join(f"{k} {v}" for k, v in targets.items()) if targets else "",
              "", "Fastest backend per recipe (chapter's seconds per epoch):", *fastest(rows)]
    verdicts = checks(rows)
    if verdicts:
        lines += ["", "Issue targets:", *verdicts]
    lines += ["", f"Peak assumed: {flops.describe_peak(peak)}."]
    return "\n".join(lines)


def write_csv(rows: list[dict], path: Path) -> Path:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            flat = dict(row)
            if isinstance(flat.get("s_per_epoch_repeats"), list):
                flat["s_per_epoch_repeats"] = " ".join(f"{v:.6g}" for v in flat["s_per_epoch_repeats"])
            flat["time_to_target"] = row.get("time_to_target_text", "")
            flat["time_to_target_s"] = row.get("time_to_target")
            writer.writerow(flat)
    return path


def plot(rows: list[dict], path: Path) -> Path:
    """Seconds per epoch, one panel per recipe, naive and chapter bars per backend (log scale)."""
    from matplotlib.patches import Patch

    from utils.plots import STYLE, plt  # sets the headless matplotlib backend

    recipes = list(dict.fromkeys(r["recipe"] for r in rows))
    with plt.style.context(STYLE):
        fig, axes = plt.subplots(1, len(recipes), figsize=(4 * len(recipes), 4.2), squeeze=False)
        for ax, recipe in zip(axes[0], recipes):
            backends = list(dict.fromkeys(r["backend"] for r in rows if r["recipe"] == recipe))
            ax.set(title=recipe)
            if not any(r["status"] == "ok" for r in rows if r["recipe"] == recipe):
                ax.text(0.5, 0.5, "no successful\nmeasurement", ha="center", va="center",
                        transform=ax.transAxes)
                continue
            missing = []  # (x, "error" or "skipped") where a bar would be
            for offset, variant, color in ((-0.2, "naive", "#E24A33"), (0.2, "chapter", "#348ABD")):
                xs, heights = [], []
                for i, backend in enumerate(backends):
                    row = next((r for r in rows if (r["recipe"], r["backend"], r["variant"])
                                == (recipe, backend, variant)), None)
                    if row and row["status"] == "ok":
                        xs.append(i + offset)
                        heights.append(row["s_per_epoch"])
                    elif row:
                        missing.append((i + offset, row["status"]))
                bars = ax.bar(xs, heights, width=0.4, color=color)
                ax.bar_label(bars, labels=[_num(h, 3) for h in heights], fontsize=7)
            for x, status in missing:
                ax.text(x, 0.02, status, rotation=90, ha="center", va="bottom", fontsize=7,
                        transform=ax.get_xaxis_transform())
            ax.set_xticks(range(len(backends)), backends)
            ax.set_xlim(-0.6, len(backends) - 0.4)
            ax.set_yscale("log")
            ax.set(ylabel="seconds per epoch (log scale)")
            ax.legend(handles=[Patch(color="#E24A33", label="naive port"),
                               Patch(color="#348ABD", label="chapter")], fontsize=8)
        fig.suptitle("seconds per epoch: naive Keras 3 port vs chapter, per backend (lower is faster)")
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
    return path
