"""Turn case outcomes into figures per engine, ratios to multiprocessing.Pool, and a table."""

from __future__ import annotations

from typing import Any

from .adapters import BASELINE, ENGINES
from .catalog import WORKLOADS, Figure, figures_of
from .config import MANY_WORKER_COUNTS, Sizes

COLUMN_GAP = 3
PHYSICAL_LABEL_WIDTH = 40


def derive_cpu_figures(results: dict[str, Any], workers: int) -> None:
    """Speedup and efficiency: the serial case's time over each engine's parallel time."""
    serial = results.get("cpu", {}).get("serial", {})
    serial_s = serial.get("figures", {}).get("cpu_serial_s", {}).get("value")
    for outcome in results.get("cpu", {}).values():
        parallel = outcome.get("figures", {}).get("cpu_parallel_s")
        if not serial_s or not parallel or "value" not in parallel:
            continue
        speedup = serial_s / parallel["value"]
        outcome["figures"]["cpu_speedup"] = {"value": speedup, "serial_s": serial_s}
        outcome["figures"]["cpu_efficiency"] = {"value": 100 * speedup / workers}


def figure_value(results: dict[str, Any], figure: Figure, engine: str) -> float | None:
    outcome = results.get(figure.workload, {}).get(engine, {})
    return outcome.get("figures", {}).get(figure.key, {}).get("value")


def cell_text(results: dict[str, Any], figure: Figure, engine: str) -> str:
    """One cell: "5.31 M  1.00x", or why there is no figure ("timeout", "n/a", ...)."""
    outcome = results.get(figure.workload, {}).get(engine)
    if outcome is None:
        return "-"
    data = outcome.get("figures", {}).get(figure.key)
    if outcome["status"] != "ok" or data is None:
        return outcome["status"] if outcome["status"] != "ok" else "-"
    if "value" not in data:
        return data.get("status", "?")
    text = format_number(data["value"])
    if data.get("capped"):
        text = ">=" + text + " cap"
    baseline = figure_value(results, figure, BASELINE)
    if figure.ratio and baseline:
        text += f"  {format_ratio(data['value'] / baseline)}"
    return text


def format_number(value: float) -> str:
    """Three significant digits with a k/M/G suffix: 5.31 M, 190, 0.567."""
    for factor, suffix in ((1e9, " G"), (1e6, " M"), (1e3, " k")):
        if abs(value) >= factor:
            return f"{value / factor:.3g}{suffix}"
    return f"{value:.3g}"


def format_ratio(ratio: float) -> str:
    return f"{ratio:.2f}x" if ratio >= 0.1 else f"{ratio:.2g}x"


def workload_title(name: str, sizes: Sizes, results: dict[str, Any]) -> str:
    serial = results.get("cpu", {}).get("serial", {}).get("figures", {}).get("cpu_serial_s", {})
    fields = {
        **vars(sizes),
        "payload_mb": sizes.payload_array_bytes // 2**20,
        "io_sleep_ms": sizes.io_sleep_s * 1e3,
        "many_worker_counts": ", ".join(str(n) for n in MANY_WORKER_COUNTS),
        "io_ideal_ms": f"{sizes.io_tasks * sizes.io_sleep_s / sizes.io_threads * 1e3:.0f}",
        "serial_s": f"{serial['value']:.2f} s" if "value" in serial else "not measured",
    }
    return WORKLOADS[name].title.format(**fields)


def header_cell(figure: Figure) -> str:
    arrow = "^" if figure.higher_is_better else "v"
    return f"{figure.label} ({figure.unit} {arrow})"


def engine_label(engine: str, workload: str) -> str:
    spec = ENGINES[engine]
    return spec.thread_label if WORKLOADS[workload].engines == "thread" else spec.label


def engines_with_results(engines: list[str], results: dict[str, Any]) -> list[str]:
    """Drop engines that could not even be imported: they would fill the table with noise."""
    return [
        engine
        for engine in engines
        if any(
            by_engine.get(engine, {}).get("status", "unavailable") != "unavailable"
            for by_engine in results.values()
        )
    ]


def workload_table(name: str, engines: list[str], sizes: Sizes, results: dict[str, Any]) -> str:
    figures = figures_of(name)
    rows = [["", *(header_cell(f) for f in figures)]]
    rows += [
        [engine_label(engine, name), *(cell_text(results, f, engine) for f in figures)]
        for engine in engines
    ]
    widths = [max(len(row[column]) for row in rows) + COLUMN_GAP for column in range(len(rows[0]))]
    lines = [f"== {workload_title(name, sizes, results)}"]
    lines += [
        "".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    return "\n".join(lines)


def physical_table(results: dict[str, Any]) -> str:
    lines = ["== physical references (this machine, no pool involved)"]
    for figure in figures_of("physical"):
        value = figure_value(results, figure, "machine")
        shown = "failed" if value is None else f"{format_number(value)} {figure.unit}"
        lines.append(f"{figure.label:<{PHYSICAL_LABEL_WIDTH}}{shown}")
    return "\n".join(lines)


def full_table(workloads: list[str], engines: list[str], sizes: Sizes, results: dict) -> str:
    """Every selected workload, ratios to multiprocessing.Pool in the same run."""
    shown = engines_with_results(engines, results)
    blocks = []
    for name in workloads:
        if name == "physical":
            blocks.append(physical_table(results))
        else:
            blocks.append(workload_table(name, shown, sizes, results))
    legend = (
        "^ higher is better, v lower is better; Nx = value / multiprocessing.Pool's value "
        "in this run; '>=... cap' = the engine read its input until the memory cap."
    )
    missing = [ENGINES[engine].label for engine in engines if engine not in shown]
    if missing:
        legend += f"\nNot importable, left out: {', '.join(missing)}."
    return "\n\n".join([*blocks, legend])
