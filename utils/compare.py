"""Compare finished runs: their curves on one figure, their numbers in one table.

    python -m utils.compare outputs/mnist/*_conv_net* outputs/mnist/*_le_net
    python -m utils.compare --latest 3 --chapter mnist --metric val_accuracy --metric loss
    python -m utils.compare "outputs/mlp/*" --model churn_mlp_6-6

Each run folder's ``run.json`` and ``history.csv`` are read; a folder that is
missing, unfinished or damaged is named in one warning line and left out. The
result goes into a new run folder ``<output-dir>/compare/<time>_compare/``:
``compare.png`` (one panel per metric, one curve per run), ``compare.csv``,
``compare.md`` and a self-contained ``report.html``. Keras is never imported,
so this runs in a second or two.
"""

from __future__ import annotations

import datetime as dt
import glob
import json
import math
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from utils import cli, report, runs, versions
from utils.errors import TutorialError
from utils.inspect import format_table
from utils.lazy import lazy

pd = lazy("pandas")  # imported on first use: --help stays fast

CHAPTER = "compare"
DEFAULT_METRICS = ("val_accuracy", "val_loss")
#: run.json arguments that say where or how verbosely a run wrote, not what it learnt.
NOT_HYPER = {"output_dir", "quiet", "list", "data_dir", "resume", "tensorboard", "model",
             "log_every", "backend"}


class RunFolderError(TutorialError):
    """A folder given to compare is not a finished run folder."""


@dataclass
class RunData:
    path: Path
    record: dict
    history: pd.DataFrame
    label: str = ""

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def model(self) -> str:
        return str(self.record.get("model") or self.path.name)


# --- finding and reading run folders --------------------------------------------------

def read_run(path: str | Path) -> RunData:
    """The run.json and history.csv of one finished run; :class:`RunFolderError` says what is wrong."""
    path = Path(path)
    if not path.is_dir():
        raise RunFolderError("no such folder" if not path.exists() else "not a folder")
    if not (path / "run.json").is_file():
        hint = ""
        if any((child / "run.json").is_file() for child in path.iterdir() if child.is_dir()):
            hint = f" (it holds run folders: give {path}/* to compare them)"
        elif (path / "epochs.csv").is_file() or (path / "backup").is_dir():
            hint = " (training has not finished, or was interrupted)"
        raise RunFolderError("no run.json" + hint)
    try:
        record = json.loads((path / "run.json").read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise RunFolderError(f"run.json is not valid JSON ({err})") from None
    check_record(record)
    if not (path / "history.csv").is_file():
        raise RunFolderError("no history.csv")
    history = read_history(path / "history.csv")
    return RunData(path, record, history)


#: run.json fields compare reads, and the JSON types each may hold (None: absent is fine).
RECORD_TYPES = {"model": (str,), "chapter": (str,), "started_at": (str,), "dataset": (str, type(None)),
                "args": (dict,), "metrics": (dict,), "wall_seconds": (int, float, type(None))}


def check_record(record) -> None:
    """A run.json that compare can read: an object, each known field of the right type,
    every metric a finite number (or text, such as a note)."""
    if not isinstance(record, dict):
        raise RunFolderError("run.json does not hold a JSON object")
    for key, types in RECORD_TYPES.items():
        if key in record and (not isinstance(record[key], types) or isinstance(record[key], bool)):
            allowed = " or ".join("null" if t is type(None) else {"str": "text", "dict": "an object"}
                                  .get(t.__name__, "a number") for t in types)
            raise RunFolderError(f"run.json is damaged: {key!r} should be {allowed}, not "
                                 f"{json.dumps(record[key])[:40]}")
    for key, value in (record.get("metrics") or {}).items():
        if isinstance(value, float) and not math.isfinite(value):
            raise RunFolderError(f"run.json records metric {key!r} as {value} (a run that diverged?)")


def read_history(file: Path) -> pd.DataFrame:
    """history.csv as numbers; :class:`RunFolderError` for text in a numeric column,
    NaN or infinity, and an epoch given twice. Columns holding only text (such as
    transfer learning's ``phase``) are kept as labels."""
    try:
        raw = pd.read_csv(file, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise RunFolderError("history.csv is empty (a run that records no epochs, such as a "
                             "comparison or a benchmark)") from None
    except (pd.errors.ParserError, UnicodeDecodeError, OSError) as err:
        raise RunFolderError(f"history.csv cannot be read ({' '.join(str(err).split())})") from None
    history = pd.DataFrame(index=raw.index)
    for column in raw.columns:
        text = raw[column].str.strip()
        numbers = pd.to_numeric(text.where(text != ""), errors="coerce")
        written = text != ""
        if not numbers[written].notna().any() and column != "epoch":
            history[column] = raw[column]  # a text column, e.g. the training phase
            continue
        not_finite = numbers.isin([math.inf, -math.inf]) | text.str.lower().isin(["nan", "-nan", "+nan"])
        if not_finite.any():
            row = int(not_finite.idxmax())
            raise RunFolderError(f"history.csv holds {text[row]} in column {column!r} on line {row + 2} "
                                 "(a run that diverged?)")
        bad = written & numbers.isna()
        if bad.any():
            row = int(bad.idxmax())
            raise RunFolderError(f"history.csv is damaged: column {column!r} holds {text[row]!r} on line "
                                 f"{row + 2}, where a number belongs")
        history[column] = numbers
    numeric = [c for c in history.columns
               if c != "epoch" and pd.api.types.is_numeric_dtype(history[c])]
    if history.empty or not numeric:
        raise RunFolderError("history.csv holds no epochs of numeric metrics")
    if "epoch" in history:
        if history["epoch"].isna().any():
            raise RunFolderError("history.csv is damaged: an epoch number is missing")
        repeated = history["epoch"].duplicated()
        if repeated.any():
            raise RunFolderError(f"history.csv is damaged: epoch {history['epoch'][repeated].iloc[0]:g} "
                                 "appears twice")
    else:
        history.insert(0, "epoch", range(1, len(history) + 1))
    return history


def _has_magic(pattern: str) -> bool:
    return any(ch in pattern for ch in "*?[")


def expand(patterns: list[str]) -> tuple[list[Path], list[str]]:
    """Folders named or matched by ``patterns`` (quoted globs are expanded here), and
    a warning for each pattern that matches nothing."""
    found, warnings = [], []
    for pattern in patterns:
        if _has_magic(pattern):
            matches = sorted(Path(p) for p in glob.glob(pattern) if Path(p).is_dir())
            if not matches:
                warnings.append(f"{pattern}: matches no folder")
            found += matches
        else:
            found.append(Path(pattern))
    return found, warnings


def _started(run: RunData) -> str:
    # ISO times and the folder's YYYYmmdd-HHMMSS prefix both sort by age as text.
    return str(run.record.get("started_at") or run.name)


def find_runs(root: Path, chapter: str | None = None, model: str | None = None,
              warnings: list[str] | None = None) -> list[RunData]:
    """Every readable run under ``root/<chapter>/``, oldest first (comparisons excluded);
    each damaged one adds a line to ``warnings``."""
    root = Path(root)
    chapters = [root / chapter] if chapter else sorted(p for p in root.glob("*") if p.is_dir())
    found = []
    for folder in chapters:
        if folder.name == CHAPTER or not folder.is_dir():
            continue
        for candidate in folder.iterdir():
            if not (candidate / "run.json").is_file():
                continue
            try:
                run = read_run(candidate)
            except RunFolderError as err:
                if warnings is not None:
                    warnings.append(f"{candidate}: {err}")
                continue
            if model is None or run.model == model:
                found.append(run)
    return sorted(found, key=lambda r: (_started(r), r.name))


def collect(patterns: list[str], latest: int | None, chapter: str | None, model: str | None,
            root: Path) -> tuple[list[RunData], list[str]]:
    """The runs to compare and one warning per folder or pattern left out."""
    paths, warnings = expand(patterns)
    chosen: list[RunData] = []
    for path in paths:
        try:
            chosen.append(read_run(path))
        except RunFolderError as err:
            warnings.append(f"{path}: {err}")
    if latest or ((chapter or model) and not patterns):
        matching = find_runs(root, chapter, model, warnings)
        if not matching:
            where = root / chapter if chapter else root
            warnings.append(f"{where}: no finished run" + (f" of model {model}" if model else ""))
        chosen += matching[-latest:] if latest else matching
    unique, seen = [], set()
    for run in chosen:
        key = run.path.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(run)
    _label(unique)
    return unique, warnings


def _label(chosen: list[RunData]) -> None:
    """The model name when it is unique among the runs, else the folder name."""
    models = [r.model for r in chosen]
    for run in chosen:
        run.label = run.model if models.count(run.model) == 1 else run.name


# --- metrics, table, figure ---------------------------------------------------------------

def lower_is_better(metric: str) -> bool:
    return any(word in metric for word in ("loss", "error", "seconds"))


def choose_metrics(chosen: list[RunData], requested: list[str] | None) -> tuple[list[str], list[str]]:
    """The metrics to draw, and a warning for each run that lacks one of them.

    By default validation accuracy and loss, or the training ones for runs that
    keep no validation split (the XOR chapter).
    """
    columns = set().union(*(set(r.history.columns) for r in chosen))
    if requested:
        metrics = list(dict.fromkeys(requested))
        absent = [m for m in metrics if m not in columns]
        if absent:
            known = sorted(columns - {"epoch"})
            raise TutorialError(f"no run has the metric {', '.join(map(repr, absent))}: "
                                f"the histories hold {', '.join(known)}")
    else:
        metrics = [m if m in columns else m.removeprefix("val_") for m in DEFAULT_METRICS]
        metrics = [m for m in dict.fromkeys(metrics) if m in columns]
        if not metrics:
            metrics = [c for c in chosen[0].history.columns if c != "epoch"][:2]
    warnings = [f"{r.path}: history.csv has no {m}" for m in metrics for r in chosen
                if m not in r.history]
    return metrics, warnings


def _number(value):
    return value if isinstance(value, int | float) and not isinstance(value, bool) else None


def flag(key: str) -> str:
    """A run.json argument as the flag that set it: learning_rate -> --learning-rate."""
    return "--" + key.replace("_", "-")


def hyper_parameters(chosen: list[RunData]) -> tuple[list[str], dict]:
    """The run.json arguments that differ between runs, and those every run shares
    (keyed by argument name, as run.json spells them)."""
    keys = [k for r in chosen for k in (r.record.get("args") or {}) if k not in NOT_HYPER]
    keys = list(dict.fromkeys(keys))
    differing, shared = [], {}
    for key in keys:
        values = [json.dumps((r.record.get("args") or {}).get(key), sort_keys=True) for r in chosen]
        if len(set(values)) == 1:
            shared[key] = (chosen[0].record.get("args") or {}).get(key)
        else:
            differing.append(key)
    return differing, shared


def summary_rows(chosen: list[RunData], metrics: list[str]) -> list[dict]:
    """One row per run: final and best value of each metric, test metrics, time, the
    hyper-parameters that differ."""
    differing, _ = hyper_parameters(chosen)
    tests = list(dict.fromkeys(k for r in chosen for k, v in (r.record.get("metrics") or {}).items()
                               if k.startswith("test_") and _number(v) is not None))
    rows = []
    for run in chosen:
        history, record = run.history, run.record
        row = {"run": run.name, "model": run.model, "chapter": record.get("chapter", "-"),
               "dataset": record.get("dataset", "-"), "epochs": int(history["epoch"].iloc[-1])}
        for metric in metrics:
            if metric in history and history[metric].notna().any():
                column = history[metric]
                best_at = column.idxmin() if lower_is_better(metric) else column.idxmax()
                row[f"final {metric}"] = float(column.dropna().iloc[-1])
                row[f"best {metric}"] = float(column[best_at])
                row[f"best {metric} epoch"] = int(history["epoch"][best_at])
            else:
                row[f"final {metric}"] = row[f"best {metric}"] = row[f"best {metric} epoch"] = None
        for key in tests:
            row[key] = _number((record.get("metrics") or {}).get(key))
        wall = _number(record.get("wall_seconds"))
        row["wall s"] = float(wall) if wall is not None else None
        row["s/epoch"] = float(history["epoch_seconds"].median()) if "epoch_seconds" in history else None
        for key in differing:
            value = (record.get("args") or {}).get(key)
            simple = value is None or isinstance(value, str | int | float)
            row[flag(key)] = value if simple else json.dumps(value)  # lists such as [8, 4]
        rows.append(row)
    return rows


def plot_comparison(chosen: list[RunData], metrics: list[str], path: Path) -> Path:
    """One panel per metric, one curve per run; each legend entry ends with the final value."""
    from utils import plots
    from utils.plots import STYLE, plt

    with plt.style.context(STYLE):
        fig, axes = plt.subplots(1, len(metrics), figsize=(6 * len(metrics), 4.3), squeeze=False)
        for ax, metric in zip(axes[0], metrics):
            # A colour and a line style per run, whole-number epochs, the y-range
            # where the curves are: see utils/plots.py.
            plots.overlaid_curves(ax, {run.label: run.history for run in chosen}, metric)
            ax.set(title=metric, xlabel="epoch", ylabel=metric)
            ax.legend(fontsize="small")
        fig.tight_layout()
        fig.savefig(path, dpi=80)
        plt.close(fig)
        plots.last_figure = fig
    return path


def _markdown_cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 100 else f"{value:,.1f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value).replace("|", "\\|")


def markdown_table(rows: list[dict]) -> str:
    columns = list(rows[0])
    lines = ["| " + " | ".join(columns) + " |",
             "|" + "|".join("---:" if any(_number(r[c]) is not None for r in rows) else "---"
                            for c in columns) + "|"]
    lines += ["| " + " | ".join(_markdown_cell(r[c]) for c in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"


# --- the command -----------------------------------------------------------------------------

@dataclass
class Comparison:
    run_dir: Path
    rows: list[dict]
    metrics: list[str]
    warnings: list[str]


def compare(patterns: list[str], *, metrics: list[str] | None = None, latest: int | None = None,
            chapter: str | None = None, model: str | None = None,
            output_dir: Path = cli.DEFAULT_OUTPUT_DIR, command: str = "",
            warn=lambda line: print(f"warning: {line}", file=sys.stderr)) -> Comparison:
    """Read the runs, write compare.png/.csv/.md, report.html and run.json into a new folder."""
    clock = time.perf_counter()
    if not patterns and not latest and not chapter and not model:
        raise TutorialError("nothing to compare: give run folders (or quoted globs), or --latest N")
    chosen, warnings = collect(patterns, latest, chapter, model, Path(output_dir))
    for line in warnings:
        warn(line)
    if not chosen:
        raise TutorialError("no usable run to compare: each folder needs run.json and a history.csv "
                            "with at least one epoch (see the warnings above)")
    for line in versions.mismatch_warnings((r.path, r.record) for r in chosen):
        warn(line)
    metrics, missing = choose_metrics(chosen, metrics)
    for line in missing:
        warn(line)
    warnings += missing
    rows = summary_rows(chosen, metrics)
    _, shared = hyper_parameters(chosen)

    folder = runs.new_run_dir(output_dir, CHAPTER, CHAPTER)
    figure = plot_comparison(chosen, metrics, folder / "compare.png")
    pd.DataFrame(rows).to_csv(folder / "compare.csv", index=False)
    (folder / "compare.md").write_text(markdown_table(rows))
    report.write_report(folder / "report.html", f"Comparison of {len(chosen)} runs", [
        ("Runs", report.table([{k: ("-" if v is None else v) for k, v in r.items()} for r in rows])),
        (", ".join(metrics), report.images([figure])),
        ("Settings every run shares", report.key_values({flag(k): v if isinstance(v, str) else json.dumps(v)
                                                          for k, v in shared.items()})),
        ("Left out", report.preformatted("\n".join(warnings) or "nothing")),
        ("Command", report.preformatted(command or "-")),
    ])
    record = {"chapter": CHAPTER, "model": CHAPTER, "command": command,
              "started_at": dt.datetime.now().isoformat(timespec="seconds"),
              "wall_seconds": round(time.perf_counter() - clock, 3), "metrics_compared": metrics,
              "runs": [str(r.path) for r in chosen], "left_out": warnings, "shared_args": shared,
              "rows": rows, "versions": runs.package_versions()}
    (folder / "run.json").write_text(json.dumps(runs._jsonable(record), indent=2) + "\n")
    return Comparison(folder, rows, metrics, warnings)


def parse_args(argv=None):
    parser = cli.ArgumentParser(prog="python -m utils.compare", description=__doc__.split("\n\n")[0],
                                     formatter_class=cli._HelpFormatter)
    parser.add_argument("runs", nargs="*", metavar="RUN_DIR_OR_GLOB",
                        help="run folders, or quoted glob patterns such as 'outputs/mnist/*conv_net*' "
                             "(default: none)")
    parser.add_argument("--metric", action="append", default=None, metavar="NAME",
                        help="history.csv column to draw; repeat for several (default: val_accuracy "
                             "and val_loss, or accuracy and loss for runs without validation)")
    parser.add_argument("--latest", type=cli.positive_int, default=None, metavar="N",
                        help="also compare the N newest finished runs under --output-dir "
                             "(default: none)")
    parser.add_argument("--chapter", default=None,
                        help="with --latest: only runs of this chapter (mnist, xor, mlp, cnn...) "
                             "(default: every chapter)")
    parser.add_argument("--model", default=None,
                        help="with --latest: only runs of this model, as run.json names it "
                             "(default: every model)")
    parser.add_argument("--output-dir", type=Path, default=cli.DEFAULT_OUTPUT_DIR,
                        help="where --latest looks for runs and where the comparison is written, "
                             "as <dir>/compare/<time>_compare/")
    parser.add_argument("--quiet", action="store_true", help="print only where the results went")
    return parser.parse_args(argv)


TABLE_COLUMNS_LEFT_OUT = ("chapter",)  # in the files, but too wide for a terminal


@cli.friendly_errors
def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    result = compare(args.runs, metrics=args.metric, latest=args.latest, chapter=args.chapter,
                     model=args.model, output_dir=args.output_dir,
                     command=shlex.join(["python", "-m", "utils.compare", *argv]))
    if not args.quiet:
        shown = [{k: v for k, v in row.items() if k not in TABLE_COLUMNS_LEFT_OUT and
                  not k.endswith(" epoch")} for row in result.rows]
        print(format_table([{k: (None if isinstance(v, float) and math.isnan(v) else v)
                             for k, v in row.items()} for row in shown]))
    print(f"\ncompared {len(result.rows)} runs: {runs.shown_path(result.run_dir)}/"
          "{compare.png,compare.csv,compare.md,report.html}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
