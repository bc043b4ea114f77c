"""A PNG of the run: one panel per figure, engines as horizontal bars."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display on CI or over ssh

import matplotlib.pyplot as plt

from .adapters import BASELINE, ENGINES
from .catalog import FIGURES, WORKLOADS, Figure
from .report import engine_label, engines_with_results, figure_value, format_number

CONVEYOR_COLOUR = "#e07b00"
BASELINE_COLOUR = "#444444"
PEER_COLOUR = "#5b8fc7"
PANEL_COLUMNS = 2
PANEL_WIDTH_IN = 7.5
PANEL_HEIGHT_PER_ENGINE_IN = 0.28
# Distances from the top edge (inches) for the title, the colour key and the panels.
TITLE_FROM_TOP_IN = 0.15
KEY_FROM_TOP_IN = 0.45
PANELS_FROM_TOP_IN = 0.6
KEY_TEXT = (
    "orange: conveyor    dark grey and dashed line: multiprocessing.Pool (the baseline)    "
    "blue: peers    hatched: input stopped at the memory cap, the true figure is higher"
)


def bar_colour(engine: str) -> str:
    if engine == BASELINE:
        return BASELINE_COLOUR
    return CONVEYOR_COLOUR if ENGINES[engine].is_conveyor else PEER_COLOUR


def status_of(results: dict[str, Any], figure: Figure, engine: str) -> str:
    outcome = results.get(figure.workload, {}).get(engine, {})
    data = outcome.get("figures", {}).get(figure.key, {})
    return data.get("status") or outcome.get("status", "-")


def is_capped(results: dict[str, Any], figure: Figure, engine: str) -> bool:
    outcome = results.get(figure.workload, {}).get(engine, {})
    return bool(outcome.get("figures", {}).get(figure.key, {}).get("capped"))


def draw_panel(axes, figure: Figure, engines: list[str], results: dict[str, Any]) -> None:
    values = [figure_value(results, figure, engine) for engine in engines]
    capped = [is_capped(results, figure, engine) for engine in engines]
    present = [v for v in values if v is not None and v > 0]
    rows = range(len(engines))
    bars = axes.barh(rows, [v or 0 for v in values], color=[bar_colour(e) for e in engines])
    for bar, was_capped in zip(bars, capped, strict=True):
        if was_capped:
            bar.set_hatch("///")  # the true value is higher: the source stopped feeding it
    axes.set_yticks(list(rows), [engine_label(e, figure.workload) for e in engines], fontsize=8)
    axes.invert_yaxis()  # first engine (the baseline) on top
    direction = "higher is better" if figure.higher_is_better else "lower is better"
    axes.set_title(
        f"{WORKLOADS[figure.workload].short}: {figure.label}\n({figure.unit}, {direction})",
        fontsize=9,
    )
    if figure.log_scale and present and max(present) / min(present) > 20:
        axes.set_xscale("log")
    baseline = figure_value(results, figure, BASELINE)
    if baseline:
        axes.axvline(baseline, color=BASELINE_COLOUR, linestyle="--", linewidth=0.8)
    left = axes.get_xlim()[0] if axes.get_xscale() == "log" else 0
    for row, (engine, value) in enumerate(zip(engines, values, strict=True)):
        text = format_number(value) if value is not None else status_of(results, figure, engine)
        if capped[row]:
            text = f">= {text} (memory cap)"
        axes.text(value if value else left, row, f" {text}", va="center", fontsize=7)
    axes.tick_params(axis="x", labelsize=7)
    axes.margins(x=0.18)


def write_chart(path: Path, engines: list[str], results: dict[str, Any], title: str) -> None:
    figures = [f for f in FIGURES if f.chart and f.workload in results and f.workload != "physical"]
    if not figures:
        return
    engines = engines_with_results(engines, results)
    rows = math.ceil(len(figures) / PANEL_COLUMNS)
    panel_height = 0.9 + PANEL_HEIGHT_PER_ENGINE_IN * len(engines)
    fig, grid = plt.subplots(
        rows,
        PANEL_COLUMNS,
        figsize=(PANEL_WIDTH_IN * PANEL_COLUMNS, panel_height * rows),
        squeeze=False,
    )
    for axes, figure in zip(grid.flat, figures, strict=False):
        draw_panel(axes, figure, engines, results)
    for axes in list(grid.flat)[len(figures) :]:
        axes.set_visible(False)
    height_in = fig.get_figheight()
    fig.suptitle(title, fontsize=11, y=1 - TITLE_FROM_TOP_IN / height_in, va="top")
    key_y = 1 - KEY_FROM_TOP_IN / height_in
    fig.text(0.5, key_y, KEY_TEXT, ha="center", va="top", fontsize=8, color=BASELINE_COLOUR)
    fig.tight_layout(rect=(0, 0, 1, 1 - PANELS_FROM_TOP_IN / height_in))
    fig.savefig(path, dpi=100)
    plt.close(fig)
