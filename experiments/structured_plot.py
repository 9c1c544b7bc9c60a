r"""The figure of a structured-pruning sweep: perplexity against size, every cut told apart.

A marker per kind of cut (depth, each width dimension, each fusion method, the budgeted
search), a colour per importance criterion, hollow for the cut alone and filled after
distillation with a thin line joining the two, the dense model as a black star and a dashed
line, and the Pareto front (no other point is both smaller and better) as a grey step line.
Cuts of about the same size are spread a little sideways, each series by its own offset. The x
axis is the non-embedding parameter count in millions, the y axis perplexity on a log
scale.

A sweep uses it with ``config.plot.style = "structured"``; the figure of saved rows (a
sweep's results.json, or the raw rows under docs/data) is redrawn with:
  python -m experiments.structured_plot --rows=docs/data/sweep_structured_ablation.json \
      --out=docs/structured_ablation.png
"""

from __future__ import annotations

import io
import json
import sys

# Marker per cut kind; colour per criterion (fixed, so every figure reads the same way).
MARKERS = {"depth": "v", "width MLP": "s", "width heads": "^", "width hidden": "D",
           "fuse average": "P", "fuse laco": "X", "fuse lowrank": "*", "search": "h"}
COLORS = {"block_influence": "tab:blue", "angular": "tab:orange", "drop_one": "tab:green",
          "activation": "tab:red", "magnitude": "tab:purple", "taylor": "tab:brown"}
DENSE = "dense"


def cut_kind(row: dict) -> str:
    """The kind of cut a sweep row made: ``dense``, ``depth``, ``width MLP`` / ``heads`` /
    ``hidden``, ``fuse <method>`` or ``search``, from its config."""
    cut = row["config"].get("cut", {})
    kind = cut.get("kind", DENSE)
    if kind in ("", "none", DENSE):
        return DENSE
    if kind == "width":
        for field, name in (("mlp_channels", "MLP"), ("heads_per_group", "heads"),
                            ("hidden", "hidden")):
            if cut.get(field):
                return f"width {name}"
    if kind == "fuse":
        return f"fuse {cut.get('fusion', 'average')}"
    return kind


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The points no other point beats on both size and perplexity (smaller is better on
    both), by increasing size."""
    front, best = [], float("inf")
    for size, value in sorted(points, key=lambda p: (p[0], p[1])):
        if value < best:
            front.append((size, value))
            best = value
    return front


def _series(row: dict) -> tuple[str, str]:
    """What tells a cut's points apart: its kind and its criterion."""
    return cut_kind(row), str(row["config"].get("cut", {}).get("criterion"))


def _dodge(rows: list[dict], x: str) -> dict[tuple[str, str], float]:
    """A sideways offset (millions) per series among the series that cut to the same size (4
    blocks fewer by three criteria, fused or dropped, and an MLP cut all land near 92M), so
    they sit side by side instead of on top of each other."""
    sizes = [r["metrics"][x] / 1e6 for r in rows]
    step = 0.011 * (max(sizes) - min(sizes) or 1.0)
    by_size: dict[int, list] = {}
    for row, size in zip(rows, sizes, strict=True):
        members = by_size.setdefault(round(size), [])
        if _series(row) not in members:
            members.append(_series(row))
    return {series: (i - (len(members) - 1) / 2) * step for members in by_size.values()
            for i, series in enumerate(members)}


def _draw_points(axes, rows: list[dict], x: str, y: str) -> list[tuple[float, float]]:
    """Draws every cut's points and the line from cut only to distilled; returns them all
    (at their true sizes)."""
    drawn, pairs, dodge = [], {}, _dodge(rows, x)
    for row in rows:
        kind = cut_kind(row)
        size, value = row["metrics"][x] / 1e6, row["metrics"][y]
        drawn.append((size, value))
        size += dodge[_series(row)]
        if kind == DENSE:
            axes.scatter([size], [value], marker="*", s=160, color="black", zorder=4)
            axes.axhline(value, color="black", linestyle="--", linewidth=0.8)
            continue
        color = COLORS.get(row["config"]["cut"].get("criterion"), "tab:gray")
        distilled = bool(row["config"].get("distill", {}).get("enabled"))
        axes.scatter([size], [value], marker=MARKERS.get(kind, "o"), s=60, zorder=3,
                     edgecolors=color, facecolors=color if distilled else "none")
        pairs.setdefault(row["metrics"].get("method"), []).append((size, value, color))
    for members in pairs.values():
        if len(members) == 2:  # the cut alone and distilled
            (x0, y0, color), (x1, y1, _) = members
            axes.plot([x0, x1], [y0, y1], color=color, linewidth=0.8, alpha=0.6, zorder=2)
    return drawn


def _legends(axes, rows: list[dict]) -> None:
    """One legend for the cut kinds and fill, another for the criteria."""
    from matplotlib.lines import Line2D

    kinds = list(dict.fromkeys(cut_kind(r) for r in rows))
    criteria = list(dict.fromkeys(r["config"]["cut"].get("criterion") for r in rows
                                  if cut_kind(r) != DENSE))

    def handle(marker, color="black", filled=True, size=8, **kwargs):
        return Line2D([], [], marker=marker, linestyle="none", markersize=size,
                      markeredgecolor=color, markerfacecolor=color if filled else "none",
                      **kwargs)

    shapes = [handle("*", size=12, label=DENSE) if k == DENSE else
              handle(MARKERS.get(k, "o"), label=k) for k in kinds]
    shapes += [handle("o", filled=False, label="cut only"), handle("o", label="distilled"),
               Line2D([], [], color="gray", linewidth=2, alpha=0.5, label="Pareto front")]
    first = axes.legend(handles=shapes, fontsize=7, loc="upper left", title="cut",
                        title_fontsize=8)
    axes.add_artist(first)
    colors = [handle("o", COLORS.get(c, "tab:gray"), label=str(c).replace("_", " "))
              for c in criteria]
    axes.legend(handles=colors, fontsize=7, loc="upper right", title="criterion",
                title_fontsize=8)


def structured_plot_png(rows: list[dict], *, title: str, x: str = "params_non_embedding",
                        y: str = "perplexity") -> bytes:
    """The figure as PNG bytes.

    Args:
      rows: sweep rows (``config``, ``metrics``), the dense model's among them if measured.
      title: the figure's title.
      x: the metric of the size axis (a parameter count; drawn in millions).
      y: the metric of the quality axis (drawn on a log scale).

    Returns:
      The PNG file's bytes.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(8, 5.5), dpi=120)
    front = pareto_front(_draw_points(axes, rows, x, y))
    axes.step([p[0] for p in front], [p[1] for p in front], where="post", color="gray",
              linewidth=2, alpha=0.5, zorder=1)
    axes.set_yscale("log")
    axes.set_xlabel("non-embedding parameters (millions)")
    axes.set_ylabel(f"{y} (log scale)")
    axes.set_title(title)
    axes.grid(True, which="both", alpha=0.3)
    _legends(axes, rows)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return buffer.getvalue()


def main(argv: list[str]) -> int:
    """Redraws the figure of saved rows: ``--rows=results.json --out=figure.png``."""
    import argparse

    from experiments import common

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", required=True, help="a sweep's results.json")
    parser.add_argument("--out", required=True, help="the PNG to write")
    args = parser.parse_args(argv)
    with open(args.rows) as f:
        saved = json.load(f)
    title = saved.get("sweep", {}).get("plot", {}).get("title", "structured cuts")
    common.write_bytes_atomic(args.out, structured_plot_png(saved["rows"], title=title))
    print(f"wrote {args.out} ({len(saved['rows'])} points)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
