"""Charts of a results file, for people who would rather look than read (issue 13):

- `<stem>-ratios.png`: dicomflow / Orthanc per workload on a log axis, bars growing from 1.0,
  coloured by whether dicomflow did better (a rate higher, a time lower) or worse, targets marked;
- `<stem>-scaling.png`: the workloads measured at several sizes (QIDO as synthetic studies are
  added, QIDO at 1k/10k/100k bulk-loaded studies, C-STORE with 1/2/4 SCP processes, C-FIND as the
  archive grows...) as line charts, one panel per family and unit.

matplotlib is imported inside `write_charts` (it is a dev extra): without it `bench.summary` still
prints its table. Rendered with the Agg canvas, no display and no pyplot state.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.targets import TARGETS, higher_is_better, number

BETTER, WORSE = "#2c7bb6", "#e66101"  # blue / orange: apart for colour-blind readers too
SYSTEM_STYLE = {"dicomflow": ("-", "o"), "orthanc": ("--", "s"), "storescp": (":", "^")}
SYSTEM_NAME = {"dicomflow": "dicomflow", "orthanc": "Orthanc", "storescp": "storescp"}
UNIT = re.compile(r"(?:^|\s)(instances/s|MB/s|ms|s)(?=$|[,\s])")
UNIT_NAME = {"ms": "time", "s": "time", "instances/s": "rate", "MB/s": "rate"}
UNIT_LABEL = {"ms": "ms (median)", "s": "seconds", "instances/s": "instances/s (median)", "MB/s": "MB/s (median)"}


@dataclass(frozen=True)
class Family:
    """Workloads that are one measurement at several sizes: `pattern` names the size `x` and the `metric`."""

    pattern: str
    title: str
    xlabel: str
    x_prefix: str = ""
    baseline: str = ""  # label of size 0: the metric measured on its own (without the size prefix)


FAMILIES = (
    Family(
        r"^at \+(?P<x>[\d,]+) studies: (?P<metric>.+)$",
        "QIDO-RS as synthetic studies are added",
        "synthetic studies added to the shared data",
        "+",
        "data only",
    ),
    Family(
        r"^synthetic load to \+(?P<x>[\d,]+) studies[,:] (?P<metric>.+)$",
        "Loading the synthetic studies",
        "synthetic studies added",
        "+",
    ),
    Family(
        r"^QIDO at (?P<x>[\d,]+) bulk-loaded studies: (?P<metric>.+)$",
        "QIDO-RS with studies bulk-loaded into the index",
        "studies in the index",
    ),
    Family(r"^(?P<metric>.+), (?P<x>\d+) SCP process\(es\)$", "C-STORE with more SCP processes", "SCP processes"),
    Family(
        r"^C-FIND study at (?P<x>[\d,]+) studies: (?P<metric>.+)$",
        "C-FIND (study level) as the archive grows",
        "studies in the archive",
    ),
)


def unit_of(workload: str) -> str:
    found = UNIT.findall(workload)
    return found[-1] if found else ""


def _medians(entry: dict[str, Any]) -> dict[str, float]:
    return {system: stats["median"] for system, stats in entry.get("systems", {}).items()}


def _target(workload: str, entry: dict[str, Any]) -> tuple[str, float] | None:
    """(op, bound) from TARGETS, else from a results entry's own "target" string (bench/dimse_qr.py)."""
    if workload in TARGETS:
        return TARGETS[workload]
    found = re.match(r"\s*(>=|<=)\s*([\d.]+)", str(entry.get("target") or ""))
    return (found.group(1), float(found.group(2))) if found else None


def _met(op: str, bound: float, value: float) -> bool:
    return value >= bound if op == ">=" else value <= bound


def _section(workload: str) -> str:
    """Rows measured at one archive size belong together (a separator is drawn between sections)."""
    found = re.search(r"\+([\d,]+) studies|at ([\d,]+) (?:bulk-loaded )?studies", workload)
    return (found.group(1) or found.group(2)) if found else ""


def _title(results: dict[str, Any]) -> str:
    return f"dicomflow benchmark {results.get('date', '')}, {results.get('machine', '')}, {results.get('reps', '?')} repetitions"


# ratios ------------------------------------------------------------------------------------------


def ratio_figure(results: dict[str, Any]) -> Any:
    """The horizontal bar chart, or None when no workload has a ratio."""
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

    rows = [
        (w, e["ratio_dicomflow_over_orthanc"], _target(w, e))
        for w, e in results["results"].items()
        if e.get("ratio_dicomflow_over_orthanc")
    ]
    if not rows:
        return None
    values = [r for _, r, _ in rows] + [t[1] for _, _, t in rows if t] + [1.0]
    low, high = min(values) / 4, max(values) * 2.5
    fig = Figure(figsize=(11, 1.9 + 0.3 * len(rows)), layout="constrained")
    ax = fig.add_subplot()
    for y, (workload, ratio, target) in enumerate(rows):
        better = ratio > 1 if higher_is_better(workload) else ratio < 1
        ax.barh(y, ratio - 1, left=1, height=0.62, color=BETTER if better else WORSE)
        text = number(ratio) + "×"
        if ratio < 1:
            ax.text(ratio / 1.07, y, text, ha="right", va="center", fontsize=8)
        else:
            ax.text(ratio * 1.07, y, text, ha="left", va="center", fontsize=8)
        if target:
            op, bound = target
            # a triangle over the bar: visible where the target is 1.0 and coincides with the line
            ax.plot([bound], [y - 0.36], marker="v", markersize=7, color="black", linestyle="none", zorder=3)
            ax.text(
                1.01,
                y,
                f"target {'≥' if op == '>=' else '≤'} {bound:g}: {'met' if _met(op, bound, ratio) else 'missed'}",
                transform=ax.get_yaxis_transform(),
                ha="left",
                va="center",
                fontsize=8,
                color="black" if _met(op, bound, ratio) else "#b30000",
            )
        if y and _section(workload) != _section(rows[y - 1][0]):
            ax.axhline(y - 0.5, color="0.75", linewidth=0.8)
    ax.axvline(1.0, color="black", linewidth=1.2)
    ax.set_xscale("log")
    ax.set_xlim(low, high)
    decades = [10.0**k for k in range(-6, 4)]
    ax.xaxis.set_major_locator(FixedLocator([d for d in decades if low <= d <= high]))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}×"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.grid(axis="x", which="major", color="0.88")
    ax.set_axisbelow(True)
    ax.set_yticks(range(len(rows)), [w for w, _, _ in rows], fontsize=9)
    ax.set_ylim(len(rows) - 0.5, -0.7)
    ax.set_xlabel(
        "dicomflow median / Orthanc median (log scale). For rates (/s) more than 1× is better, for times (ms, s) less than 1×.",
        fontsize=9,
    )
    ax.set_title(f"dicomflow relative to Orthanc\n{_title(results)}", fontsize=11)
    fig.legend(
        handles=[
            Patch(color=BETTER, label="dicomflow better than Orthanc"),
            Patch(color=WORSE, label="dicomflow worse than Orthanc"),
            Line2D(
                [],
                [],
                color="black",
                marker="v",
                markersize=7,
                linestyle="none",
                label="target on the ratio (met / missed at the right)",
            ),
        ],
        loc="outside lower center",
        ncol=3,
        fontsize=9,
        frameon=False,
    )
    return fig


# scaling -----------------------------------------------------------------------------------------


@dataclass
class Panel:
    title: str
    xlabel: str
    unit: str
    xticks: list[str]
    lines: dict[tuple[str, str], dict[int, float]]  # (metric, system) -> {x index: median}
    targets: list[tuple[int, str, float, str]]  # (x index, op, bound, metric) on dicomflow's own value


def _size(text: str) -> int:
    return int(text.replace(",", ""))


def scaling_panels(results: dict[str, Any]) -> list[Panel]:
    """One panel per family and unit that has at least two sizes; a family with many lines gets a
    panel per system (same y axis) instead of one panel with a line style per system."""
    entries: dict[str, dict[str, Any]] = results["results"]
    panels: list[Panel] = []
    for family in FAMILIES:
        found: list[tuple[int, str, str]] = []  # (size, metric, workload)
        for workload in entries:
            match = re.match(family.pattern, workload)
            if match and _medians(entries[workload]):
                found.append((_size(match["x"]), match["metric"], workload))
        sizes = sorted({size for size, _, _ in found})
        if family.baseline:
            for metric in dict.fromkeys(m for _, m, _ in found):
                if _medians(entries.get(metric, {})):
                    found.append((0, metric, metric))
            sizes = sorted({size for size, _, _ in found})
        if len(sizes) < 2:
            continue
        xticks = [family.baseline if size == 0 and family.baseline else f"{family.x_prefix}{size:,}" for size in sizes]
        by_unit: dict[str, list[tuple[int, str, str]]] = {}
        for item in found:
            by_unit.setdefault(unit_of(item[1]), []).append(item)
        for unit, items in by_unit.items():
            metrics = list(dict.fromkeys(m for _, m, _ in items))
            systems = list(dict.fromkeys(s for _, _, w in items for s in _medians(entries[w])))
            lines: dict[tuple[str, str], dict[int, float]] = {}
            targets: list[tuple[int, str, float, str]] = []
            for size, metric, workload in items:
                entry = entries[workload]
                for system, median in _medians(entry).items():
                    lines.setdefault((metric, system), {})[sizes.index(size)] = median
                target = _target(workload, entry)
                if target and entry.get("ratio_dicomflow_over_orthanc") is None:
                    targets.append((sizes.index(size), *target, metric))
            split = len(systems) > 1 and len(metrics) * len(systems) > 8
            for system in systems if split else [""]:
                chosen = {key: points for key, points in lines.items() if not system or key[1] == system}
                title = family.title + (f": {SYSTEM_NAME.get(system, system)}" if system else "")
                if len(by_unit) > 1:  # one family measured in two units: say which panel is which
                    title += f" ({UNIT_NAME.get(unit, unit)})"
                panels.append(Panel(title, family.xlabel, unit, xticks, chosen, targets if system in ("", "dicomflow") else []))
    return panels


def _legend_label(metric: str, unit: str) -> str:
    if not unit:
        return metric
    return re.sub(rf"[,\s]*\b{re.escape(unit)}(?=$|,)", "", metric).strip(" ,")


def scaling_figure(results: dict[str, Any]) -> Any:
    """The line charts, or None when the results hold no workload at two or more sizes."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    panels = scaling_panels(results)
    if not panels:
        return None
    columns = 2 if len(panels) > 1 else 1
    rows = -(-len(panels) // columns)
    fig = Figure(figsize=(max(6.2 * columns, 9.0), 5.0 * rows), layout="constrained")  # room for the title
    fig.suptitle(f"Workloads at several sizes (medians)\n{_title(results)}", fontsize=11)
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    palette = [f"C{i}" for i in range(10)]
    shared: dict[tuple[str, str], Any] = {}  # panels of one family split per system share their y axis
    family_values: dict[tuple[str, str], list[float]] = {}
    for panel in panels:
        family_values.setdefault((panel.title.split(":")[0], panel.unit), []).extend(
            [v for points in panel.lines.values() for v in points.values()] + [t[2] for t in panel.targets]
        )
    for ax, panel in zip(axes, panels):
        family_key = (panel.title.split(":")[0], panel.unit)
        if family_key in shared:
            ax.sharey(shared[family_key])
        else:
            shared[family_key] = ax
        metrics = list(dict.fromkeys(m for m, _ in panel.lines))
        systems = list(dict.fromkeys(s for _, s in panel.lines))
        for (metric, system), points in panel.lines.items():
            xs = sorted(points)
            style, marker = SYSTEM_STYLE.get(system, ("-.", "D"))
            label = _legend_label(metric, panel.unit)
            if len(systems) > 1:
                label += f" ({SYSTEM_NAME.get(system, system)})"
            ax.plot(
                xs,
                [points[x] for x in xs],
                linestyle=style,
                marker=marker,
                markersize=5,
                color=palette[metrics.index(metric) % len(palette)],
                label=label,
            )
        for x, op, bound, metric in panel.targets:
            ax.plot(
                [x],
                [bound],
                marker="_",
                markersize=22,
                markeredgewidth=2.5,
                color="#b30000",
                linestyle="none",
                label=f"target: {_legend_label(metric, panel.unit)} {'≥' if op == '>=' else '≤'} {bound:g} {panel.unit}",
            )
        values = family_values[family_key]
        if min(values) > 0 and max(values) / min(values) > 8:
            ax.set_yscale("log")
            subs = (1.0,) if max(values) / min(values) > 300 else (1.0, 2.0, 5.0)
            ax.yaxis.set_major_locator(LogLocator(base=10, subs=subs))
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
            ax.yaxis.set_minor_formatter(NullFormatter())
        else:
            ax.set_ylim(0, max(values) * 1.15)
        ax.set_xticks(range(len(panel.xticks)), panel.xticks)
        ax.set_xlim(-0.25, len(panel.xticks) - 0.75)
        ax.set_xlabel(panel.xlabel, fontsize=9)
        ax.set_ylabel(UNIT_LABEL.get(panel.unit, panel.unit), fontsize=9)
        ax.set_title(panel.title, fontsize=10)
        ax.grid(color="0.9")
        ax.legend(
            loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=1 if len(panel.lines) < 6 else 2, fontsize=7.5, frameon=False
        )
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    return fig


# writing -----------------------------------------------------------------------------------------


def write_charts(results: dict[str, Any], stem: str, directories: list[Path]) -> list[Path]:
    """`<stem>-ratios.png` and `<stem>-scaling.png` (those the results hold) into the first directory,
    copied into the others; returns every path written. Raises ImportError without matplotlib."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    written: list[Path] = []
    first, *others = directories
    for name, build in (("ratios", ratio_figure), ("scaling", scaling_figure)):
        fig = build(results)
        if fig is None:
            continue
        FigureCanvasAgg(fig)
        first.mkdir(parents=True, exist_ok=True)
        out = first / f"{stem}-{name}.png"
        fig.savefig(out, dpi=110, metadata={"Software": None})
        written.append(out)
        for directory in others:
            directory.mkdir(parents=True, exist_ok=True)
            if (directory / out.name).resolve() != out.resolve():
                written.append(Path(shutil.copyfile(out, directory / out.name)))
    return written
