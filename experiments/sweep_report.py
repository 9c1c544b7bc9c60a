"""The reports of a sweep: pivot tables in markdown, the rows as JSON, and a PNG plot.

A row (see experiments/sweep.py) holds ``metrics``, ``timings`` and ``peak_memory_mb``; the
sweep config's ``table`` names which of those fields make the rows, columns and cells of the
pivot tables, and ``plot`` which make the axes and series of the figure.
"""

from __future__ import annotations

import io
import math
import os

from absl import logging

from experiments import common

# Cell formats by value name; other floats get 4 decimals.
FORMATS = {"perplexity": ".2f", "perplexity_before": ".2f", "tokens_per_second": ".0f",
           "mean_nll": ".4f", "final_loss": ".4f", "train_seconds": ".1f", "prune_seconds": ".1f",
           "eval_seconds": ".1f", "wall_seconds": ".1f", "peak_memory_mb": ".0f",
           "sparsity": ".4f"}
BASELINE = "dense"
# "series": one line or set of markers per plot.series; "structured": the structured-pruning
# figure of experiments/structured_plot.py (a marker per cut kind, a colour per criterion).
PLOT_STYLES = ("series", "structured")


def field_of(row: dict, name: str):
    """A named value of a row: from its metrics, else its timings, else the row itself.

    Raises:
      KeyError: when the row has no such value.
    """
    for source in (row.get("metrics", {}), row.get("timings", {}), row):
        if name in source:
            return source[name]
    raise KeyError(f"sweep rows have no value {name!r}; metrics: {sorted(row.get('metrics', {}))}"
                   f", timings: {sorted(row.get('timings', {}))}")


def check_report_config(sweep) -> None:
    """Checks ``sweep.table`` and ``sweep.plot`` before any point runs.

    Raises:
      ValueError: naming the field, its value and what is allowed.
    """
    for field in ("rows", "columns"):
        if not isinstance(sweep.table[field], str) or not sweep.table[field]:
            raise ValueError(f"config.table.{field} must name a metric, got "
                             f"{sweep.table[field]!r}")
    values = sweep.table["values"]
    if isinstance(values, str) or not values or not all(isinstance(v, str) for v in values):
        raise ValueError(f"config.table.values must be a non-empty tuple of value names, got "
                         f"{values!r}")
    for field in ("x", "y", "series"):
        if not isinstance(sweep.plot[field], str) or not sweep.plot[field]:
            raise ValueError(f"config.plot.{field} must name a metric, got {sweep.plot[field]!r}")
    style = sweep.plot.get("style", "series")
    if style not in PLOT_STYLES:
        raise ValueError(f"config.plot.style must be one of {PLOT_STYLES}, got {style!r}")


def _cell(name: str, value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return format(value, FORMATS.get(name, ".4f"))
    return str(value)


def pivot(rows: list[dict], row_key: str, column_key: str, value: str):
    """Groups ``rows`` into a table: one line per ``row_key``, one column per ``column_key``.

    Lines and columns keep the order in which they first appear.

    Returns:
      ``(line_labels, column_labels, cells)`` with ``cells[(line, column)] = value``.

    Raises:
      ValueError: when two rows fall into the same cell.
    """
    lines, columns, cells = [], [], {}
    for row in rows:
        line, column = str(field_of(row, row_key)), str(field_of(row, column_key))
        lines += [line] if line not in lines else []
        columns += [column] if column not in columns else []
        if (line, column) in cells:
            raise ValueError(f"two sweep points fall into the cell ({row_key}={line}, "
                             f"{column_key}={column}); choose other table.rows/columns")
        cells[line, column] = field_of(row, value)
    return lines, columns, cells


def pivot_markdown(sweep, rows: list[dict]) -> str:
    """One markdown pivot table per name in ``sweep.table.values``."""
    parts = []
    for value in sweep.table["values"]:
        lines, columns, cells = pivot(rows, sweep.table.rows, sweep.table.columns, value)
        header = [f"{sweep.table.rows} \\ {value}", *columns]
        text = ["| " + " | ".join(header) + " |",
                "| --- |" + " ---: |" * len(columns)]
        for line in lines:
            text.append(f"| {line} | " + " | ".join(_cell(value, cells.get((line, c)))
                                                     for c in columns) + " |")
        parts.append("\n".join(text))
    return "\n\n".join(parts)


def details_markdown(rows: list[dict]) -> str:
    """One line per point: every metric, every timing and the peak memory."""
    metric_names = list(dict.fromkeys(k for row in rows for k in row["metrics"]))
    timing_names = list(dict.fromkeys(k for row in rows for k in row["timings"]))
    header = ["point", *metric_names, *timing_names, "peak_memory_mb"]
    text = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    for row in rows:
        cells = [str(row["point"])]
        cells += [_cell(n, row["metrics"].get(n)) for n in metric_names]
        cells += [_cell(n, row["timings"].get(n)) for n in timing_names]
        cells.append(_cell("peak_memory_mb", row["peak_memory_mb"]))
        text.append("| " + " | ".join(cells) + " |")
    return "\n".join(text)


def provenance_markdown(rows: list[dict]) -> str:
    """Which revisions, package versions and machines produced the rows."""
    revisions = sorted({row["git"] for row in rows})
    machines = sorted({f"{row['machine']['platform']}, {row['machine']['cpus']} CPUs"
                       for row in rows})
    packages = sorted({", ".join(f"{k} {v}" for k, v in sorted(row["packages"].items()))
                       for row in rows})
    return "\n".join([f"- git revision: {', '.join(revisions)}",
                      f"- machine: {'; '.join(machines)}",
                      f"- packages: {'; '.join(packages)}"])


# Colours repeat after ten series, so each series also gets its own marker (the pair repeats
# after 40); more than _LEGEND_INSIDE_MAX series put the legend outside the axes.
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
_LEGEND_INSIDE_MAX = 8
# The N:M points beside a numeric x's curves.
_N_OF_M_MARKERS = ("^", "s", "D", "v", "P", "X")


def _plot_categorical(axes, p, rows: list[dict], categories: list) -> None:
    """One set of points per series at each category's position, the series side by side
    within it (so that equal values stay apart), each with its own colour and marker."""
    names = list(dict.fromkeys(str(field_of(r, p.series)) for r in rows))
    step = min(0.6 / max(len(names), 1), 0.12)
    for index, series in enumerate(names):
        members = [r for r in rows if str(field_of(r, p.series)) == series]
        offset = (index - (len(names) - 1) / 2) * step
        # Join the points only when the categories have an order (plot.lines).
        axes.plot([categories.index(field_of(r, p.x)) + offset for r in members],
                  [field_of(r, p.y) for r in members], label=series, color=f"C{index % 10}",
                  marker=_MARKERS[index % len(_MARKERS)],
                  linestyle="-" if p.get("lines", True) else "none")
    axes.set_xticks(range(len(categories)), [str(c) for c in categories])


def _plot_numeric(axes, p, rows: list[dict]) -> None:
    """One curve per series over a numeric x; N:M points (a ":" in their setting) as markers
    of the series' colour beside the curves, one marker per N:M setting."""
    marker_of, colors = {}, {}
    for series in dict.fromkeys(str(field_of(r, p.series)) for r in rows):
        members = [r for r in rows if str(field_of(r, p.series)) == series]
        curve = sorted((r for r in members if ":" not in str(r["metrics"].get("setting", ""))),
                       key=lambda r: field_of(r, p.x))
        if curve:
            (line,) = axes.plot([field_of(r, p.x) for r in curve],
                                [field_of(r, p.y) for r in curve], marker="o", label=series,
                                linestyle="-" if p.get("lines", True) else "none")
            colors[series] = line.get_color()
        for r in members:
            setting = str(r["metrics"].get("setting", ""))
            if ":" in setting:
                marker = marker_of.setdefault(
                    setting, _N_OF_M_MARKERS[len(marker_of) % len(_N_OF_M_MARKERS)])
                scatter = axes.scatter([field_of(r, p.x)], [field_of(r, p.y)], marker=marker,
                                       s=45, color=colors.get(series), label=f"{series} {setting}")
                colors.setdefault(series, scatter.get_facecolor()[0])


def plot_png(sweep, rows: list[dict]) -> bytes:
    """The sweep's figure as PNG bytes: ``plot.y`` against ``plot.x``, one line per
    ``plot.series``, the dense baseline as a dashed horizontal line.

    A numeric ``plot.x`` (sparsity) draws N:M points (a ":" in their setting) as separate
    markers beside the curves; a text ``plot.x`` (setting) places its values in order of
    appearance along the axis. Points are joined by lines unless ``plot.lines`` is False.
    ``plot.style = "structured"`` draws ``experiments.structured_plot``'s figure instead.
    """
    if sweep.plot.get("style", "series") == "structured":
        from experiments import structured_plot

        return structured_plot.structured_plot_png(rows, title=sweep.plot.title, x=sweep.plot.x,
                                                   y=sweep.plot.y)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    p = sweep.plot
    figure, axes = plt.subplots(figsize=(7, 4.5), dpi=120)
    others = [r for r in rows if str(field_of(r, p.series)) != BASELINE]
    categories = list(dict.fromkeys(field_of(r, p.x) for r in others))
    categorical = any(isinstance(c, str) for c in categories)
    for r in rows:
        if str(field_of(r, p.series)) == BASELINE:
            axes.axhline(field_of(r, p.y), color="black", linestyle="--", linewidth=1,
                         label=f"{BASELINE} ({_cell(p.y, field_of(r, p.y))})")
    if categorical:
        _plot_categorical(axes, p, others, categories)
    else:
        _plot_numeric(axes, p, others)
    if p.logy:
        axes.set_yscale("log")
    axes.set_xlabel(p.x)
    axes.set_ylabel(p.y + (" (log scale)" if p.logy else ""))
    axes.set_title(p.title)
    axes.grid(True, which="both", alpha=0.3)
    if len({str(field_of(r, p.series)) for r in rows}) > _LEGEND_INSIDE_MAX:
        # Many series: the legend goes beside the axes, where it cannot hide a point.
        figure.set_size_inches(10, 4.5)
        axes.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    else:
        axes.legend(fontsize=8, ncol=2)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return buffer.getvalue()


def write_reports(sweep, rows: list[dict]) -> dict[str, str]:
    """Writes results.md, results.json and (with matplotlib installed) results.png, atomically.

    Returns:
      What was written, by kind.
    """
    # Only the plotted values must be finite: a NaN elsewhere in a row (the standard error of
    # a one-document smoke run) does not take its point off the figure.
    finite = [r for r in rows if all(
        math.isfinite(v) for v in (field_of(r, sweep.plot.x), field_of(r, sweep.plot.y))
        if isinstance(v, float))]
    text = "\n\n".join([
        f"# {sweep.name}", sweep.description, pivot_markdown(sweep, rows),
        "## Every point", details_markdown(rows), "## Provenance", provenance_markdown(rows)])
    paths = {"markdown": os.path.join(sweep.workdir, "results.md"),
             "json": os.path.join(sweep.workdir, "results.json")}
    common.write_text_atomic(paths["markdown"], text + "\n")
    common.write_json_atomic(paths["json"], {"sweep": sweep.to_dict(), "rows": rows})
    try:
        png = plot_png(sweep, finite)
    except ImportError:
        logging.warning("matplotlib is not installed (extra 'plots'): no results.png")
        return paths
    paths["png"] = os.path.join(sweep.workdir, "results.png")
    common.write_bytes_atomic(paths["png"], png)
    return paths
