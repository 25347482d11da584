"""PNG plots of result rows: accuracy vs speed, compute vs speed, and the K^2 block study.

Matplotlib (Agg backend) is imported inside the functions, so importing this module stays cheap.
Each plot draws only from the rows that carry its fields; a plot without such rows is skipped with a
one-line note on stderr and no file is written.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from segbench.rows.row import Row
from segbench.rows.schema import pair_ratios

#: Fields that tell otherwise identical rows apart in labels, when the rows differ in them.
_DISTINGUISHING = (
    "device_name",
    "hostname",
    "precision",
    "channels_last",
    "compiled",
    "cuda_graph",
    "batch_size",
    "height",
    "width",
)


def number(value: Any) -> float | None:
    """A finite float from a row cell, or None (bools, text and NaN are not numbers here)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if value == value and abs(value) != float("inf") else None


def macs_of(row: Row) -> float | None:
    """The row's MAC count for one forward pass of its input: analytic if counted, else fvcore's."""
    return number(row.get("macs_analytic")) or number(row.get("macs_fvcore"))


def gmacs_per_second(row: Row) -> float | None:
    """Achieved compute rate: MACs of one forward pass / median latency, in GMAC/s."""
    macs, latency = macs_of(row), number(row.get("latency_ms_median"))
    if macs is None or not latency:
        return None
    return macs / 1e9 / (latency / 1e3)


def interval(rows: Sequence[Row], field: str) -> list[tuple[float, float]] | None:
    """Error-bar lengths (below, above) of ``field`` from each row's ``<field>_ci_low/high``; None
    when no row has an interval (older files), zero for the rows that lack one."""
    stem = field.removesuffix("_median")
    bars = []
    for row in rows:
        value, low, high = number(row.get(field)), number(row.get(f"{stem}_ci_low")), number(row.get(f"{stem}_ci_high"))
        bars.append(
            (value - low, high - value) if value is not None and low is not None and high is not None else (0, 0)
        )
    return bars if any(b != (0, 0) for b in bars) else None


def _errorbars(
    ax: Any, xs: Sequence[float], ys: Sequence[float], color: str, xerr: Any = None, yerr: Any = None
) -> None:
    """Error bars of 95 % intervals (``[(below, above), ...]``), where there are any."""
    if xerr is None and yerr is None:
        return
    ax.errorbar(
        xs, ys, xerr=_columns(xerr), yerr=_columns(yerr), fmt="none", ecolor=color, alpha=0.6, capsize=3, zorder=2
    )


def _columns(bars: list[tuple[float, float]] | None) -> list[tuple[float, ...]] | None:
    """[(below, above), ...] as matplotlib's two rows (all belows, all aboves)."""
    return None if bars is None else list(zip(*bars))


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats (lower x and higher y), ordered by x.

    A point is dominated when another has x <= and y >= with one of them strict.
    """
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front: list[int] = []
    best_y = float("-inf")
    for i in order:
        if points[i][1] > best_y:
            front.append(i)
            best_y = points[i][1]
    return front


def point_labels(rows: Sequence[Row]) -> list[str]:
    """Model names, extended by the fields in which the rows differ (device, precision, size, ...)."""
    varying = [f for f in _DISTINGUISHING if len({r.get(f) for r in rows}) > 1]
    if "height" in varying or "width" in varying:
        varying = [f for f in varying if f not in ("height", "width")] + ["size"]
    labels = []
    for row in rows:
        parts = []
        for field in varying:
            if field == "size":
                parts.append(f"{row.get('height')}x{row.get('width')}")
            elif field == "batch_size":
                parts.append(f"bs{row.get(field)}")
            elif isinstance(row.get(field), bool):
                parts.append(field if row[field] else f"no {field}")
            else:
                parts.append(str(row.get(field)))
        labels.append(f"{row.get('model')} ({', '.join(parts)})" if parts else str(row.get("model")))
    return labels


def draw_plots(rows: Sequence[Row], out_dir: str | Path) -> list[Path]:
    """Write every plot the rows allow into ``out_dir``; return the files written."""
    out = Path(out_dir)
    written = []
    for name, draw in PLOTS.items():
        path = out / f"{name}.png"
        reason = draw(rows, path)
        if reason:
            print(f"segbench: skipped plot {name}: {reason}", file=sys.stderr)
        else:
            written.append(path)
    return written


def _model_rows(rows: Sequence[Row], *fields: str) -> list[Row]:
    return [
        r
        for r in rows
        if r.get("kind", "model") == "model"
        and not r.get("error")
        and all((number(r.get(f)) or 0) > 0 for f in fields)  # a latency or MAC count <= 0 measured nothing
    ]


def _figure(ncols: int = 1, width: float = 8.0) -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg")
    # Labels are model names and file contents, never formulas: "$x$" is text, not mathtext (which
    # would typeset it, or fail on "$" alone).
    matplotlib.rcParams["text.parse_math"] = False
    import matplotlib.pyplot as plt

    return plt.subplots(1, ncols, figsize=(width, 5.5), squeeze=False)


def _save(fig: Any, path: Path) -> None:
    """Write the figure as PNG, atomically (`segbench.writing`: a `WriteError` names the file and why)."""
    import matplotlib.pyplot as plt

    from segbench.writing import write_with

    fig.tight_layout()
    try:
        write_with(path, lambda temporary: fig.savefig(temporary, dpi=120, format="png"))
    finally:
        plt.close(fig)


def _log_if_wide(axis_setter: Callable[[str], None], values: Sequence[float]) -> bool:
    """Log scale when values span more than a factor 20 (e.g. FCN vs Fast-SCNN latency)."""
    wide = min(values) > 0 and max(values) / min(values) > 20
    if wide:
        axis_setter("log")
    return wide


def _annotate(ax: Any, xs: Sequence[float], ys: Sequence[float], labels: Sequence[str]) -> None:
    """Label each point; a label whose point sits close to earlier ones moves down a line per neighbour."""
    import math

    def scaled(values: Sequence[float], log: bool) -> list[float]:
        lo, hi = (min(values), max(values))
        if log:
            values, lo, hi = [math.log10(v) for v in values], math.log10(lo), math.log10(hi)
        return [(v - lo) / ((hi - lo) or 1.0) for v in values]

    px, py = scaled(xs, ax.get_xscale() == "log"), scaled(ys, ax.get_yscale() == "log")
    for i, (x, y, label) in enumerate(zip(xs, ys, labels)):
        near = sum(abs(px[i] - px[j]) < 0.08 and abs(py[i] - py[j]) < 0.05 for j in range(i))
        ax.annotate(label, (x, y), textcoords="offset points", xytext=(6, 4 - 12 * near), fontsize=8)


def plot_miou_latency(rows: Sequence[Row], path: Path) -> str | None:
    """mIoU against median latency, one labelled point per model row, a Pareto front per device.

    Fronts are drawn per ``device_name``: which model to pick is a question asked on one device.
    """
    data = [r for r in _model_rows(rows, "latency_ms_median") if number(r.get("miou")) is not None]
    if not data:
        return "no model rows with both latency_ms_median and miou"
    xs = [float(r["latency_ms_median"]) for r in data]
    ys = [float(r["miou"]) for r in data]
    devices = list(dict.fromkeys(r.get("device_name") for r in data))
    fig, axes = _figure()
    ax = axes[0][0]
    for n, device in enumerate(devices):
        color = f"C{n % 10}"
        idx = [i for i, r in enumerate(data) if r.get("device_name") == device]
        front = [idx[i] for i in pareto_front([(xs[i], ys[i]) for i in idx])]
        rest = [i for i in idx if i not in front]
        name = device if len(devices) > 1 else "Pareto front"
        ax.step([xs[i] for i in front], [ys[i] for i in front], "o-", where="post", color=color, label=name, zorder=4)
        ax.scatter([xs[i] for i in rest], [ys[i] for i in rest], facecolors="none", edgecolors=color, zorder=3)
        bars = interval([data[i] for i in idx], "latency_ms_median")
        _errorbars(ax, [xs[i] for i in idx], [ys[i] for i in idx], color, xerr=bars)
    _log_if_wide(ax.set_xscale, xs)
    _annotate(ax, xs, ys, point_labels(data))
    ax.margins(x=0.25, y=0.1)
    ax.set_xlabel("median latency (ms, lower is better)")
    ax.set_ylabel("mIoU (higher is better)")
    ax.set_title(
        "Accuracy vs latency\nfilled + line: Pareto front (nothing is faster and more accurate); hollow: dominated; "
        "bars: 95% interval of the median",
        fontsize=10,
        wrap=True,  # a long title is wrapped, not cut at the figure's edge
    )
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    _save(fig, path)
    return None


def plot_macs_latency(rows: Sequence[Row], path: Path) -> str | None:
    """Left: GMAC vs latency per model; right: achieved GMAC/s per model (how well it uses the device)."""
    counted = [(r, macs) for r in _model_rows(rows, "latency_ms_median") if (macs := macs_of(r))]
    if not counted:
        return "no model rows with both latency_ms_median and macs_analytic/macs_fvcore"
    data = [r for r, _ in counted]
    gmacs = [macs / 1e9 for _, macs in counted]
    latency = [float(r["latency_ms_median"]) for r in data]
    rate = [gmacs_per_second(r) or 0.0 for r in data]
    labels = point_labels(data)
    fig, axes = _figure(ncols=2, width=13.0)
    left, right = axes[0]
    left.scatter(gmacs, latency, color="tab:blue", zorder=3)
    _errorbars(left, gmacs, latency, "tab:blue", yerr=interval(data, "latency_ms_median"))
    _log_if_wide(left.set_xscale, gmacs)
    _log_if_wide(left.set_yscale, latency)
    _annotate(left, gmacs, latency, labels)
    left.margins(x=0.3, y=0.1)
    left.set_xlabel("compute per forward pass (GMAC)")
    left.set_ylabel("median latency (ms)")
    left.set_title("Compute vs latency")
    left.grid(True, alpha=0.3)
    order = sorted(range(len(data)), key=lambda i: rate[i])
    right.barh([labels[i] for i in order], [rate[i] for i in order], color="tab:green")
    for pos, i in enumerate(order):
        text = f"{rate[i]:,.1f}" if rate[i] >= 10 else f"{rate[i]:.3g}"
        right.annotate(text, (rate[i], pos), textcoords="offset points", xytext=(3, -3), fontsize=8)
    right.set_xlabel("achieved throughput (GMAC/s = GMAC / median latency)")
    right.set_title("Achieved compute rate per model")
    right.grid(True, axis="x", alpha=0.3)
    fig.suptitle("MACs are multiply-accumulates; FLOPs = 2 x MACs", fontsize=9)
    _save(fig, path)
    return None


def block_speedups(rows: Sequence[Row]) -> list[dict[str, Any]]:
    """Pair standard and dsconv block rows of the same K, channels, size and device.

    Each entry: device_name, kernel_size, in_channels, out_channels and the pair's ratio columns
    (`segbench.rows.schema.pair_ratios`: mac_ratio, mac_ratio_theory, latency_speedup), with the
    meanings every command gives them. Rows of any command pair up, ``segbench latency`` rows too.
    """
    cells: dict[tuple[Any, ...], dict[str, Row]] = {}
    for r in rows:
        if r.get("kind") != "block" or r.get("error") or r.get("block") not in ("standard", "dsconv"):
            continue
        if not (number(r.get("kernel_size")) and number(r.get("in_channels")) and number(r.get("latency_ms_median"))):
            continue
        key = (
            r.get("device_name"),
            r["kernel_size"],
            r["in_channels"],
            r.get("out_channels") or r["in_channels"],
            r.get("stride"),
            r.get("height"),
            r.get("width"),
            r.get("batch_size"),
            r.get("precision"),
        )
        cells.setdefault(key, {})[r["block"]] = r
    pairs = []
    for key, cell in cells.items():
        if set(cell) != {"standard", "dsconv"}:
            continue
        geometry = {"kernel_size": int(key[1]), "in_channels": int(key[2]), "out_channels": int(key[3])}
        ratios = pair_ratios(cell["standard"], {**cell["dsconv"], **geometry})
        roofline = number(cell["dsconv"].get("speedup_roofline"))
        pairs.append({"device_name": key[0], **geometry, **ratios, "speedup_roofline": roofline})
    return sorted(pairs, key=lambda p: (str(p["device_name"]), p["out_channels"], p["kernel_size"]))


def plot_k2_study(rows: Sequence[Row], path: Path) -> str | None:
    """Speed-up of dsconv over standard conv per kernel size: theory (dashed) vs measured (solid)."""
    pairs = block_speedups(rows)
    if not pairs:
        return "no matching standard/dsconv block rows with kernel_size, in_channels and latency_ms_median"
    devices = list(dict.fromkeys(p["device_name"] for p in pairs))
    fig, axes = _figure(ncols=len(devices), width=7.0 * len(devices))
    import matplotlib.pyplot as plt

    channels = sorted({p["out_channels"] for p in pairs})
    colors = plt.get_cmap("viridis")([i / max(1, len(channels) - 1) * 0.85 for i in range(len(channels))])
    for ax, device in zip(axes[0], devices):
        for channel, color in zip(channels, colors):
            sel = [p for p in pairs if p["device_name"] == device and p["out_channels"] == channel]
            if not sel:
                continue
            ks = [p["kernel_size"] for p in sel]
            ax.plot(ks, [1 / p["mac_ratio_theory"] for p in sel], "--", color=color, alpha=0.7)
            if all(p["speedup_roofline"] for p in sel):
                ax.plot(ks, [p["speedup_roofline"] for p in sel], "-.", color=color, alpha=0.7)
            ax.plot(ks, [p["latency_speedup"] for p in sel], "o-", color=color, label=f"C=N={channel}")
            _errorbars(ax, ks, [p["latency_speedup"] for p in sel], color, yerr=interval(sel, "latency_speedup"))
        all_k = sorted({p["kernel_size"] for p in pairs})
        ax.plot(all_k, [k**2 for k in all_k], ":", color="black", label="K^2 (limit)")
        ax.axhline(1.0, color="tab:red", linewidth=0.8)
        ax.set_yscale("log")
        ax.set_xticks(all_k)
        ax.set_xlabel("kernel size K")
        ax.set_ylabel("speed-up of depthwise-separable over standard (x)")
        ax.set_title(
            f"K^2 study on {device}\ndashed: theory 1/(1/N + 1/K^2), solid: measured speed-up (bars: 95% interval)",
            fontsize=10,
            wrap=True,
        )
        ax.grid(True, which="both", alpha=0.3)
        ax.plot([], [], "--", color="gray", label="theory (MAC ratio)")
        ax.plot([], [], "o-", color="gray", label="measured (latency ratio)")
        if any(p["speedup_roofline"] for p in pairs):
            ax.plot([], [], "-.", color="gray", label="roofline prediction")
        ax.legend(fontsize=8)
    _save(fig, path)
    return None


def _layer_rows(rows: Sequence[Row]) -> list[Row]:
    fields = ("layer_ms", "intensity", "achieved_gmacs", "peak_gmacs")
    return [
        r for r in rows if r.get("kind") == "layer" and not r.get("error") and all(number(r.get(f)) for f in fields)
    ]


def plot_roofline(rows: Sequence[Row], path: Path) -> str | None:
    """Cache-aware roofline per model x runtime: log-log intensity (MAC/byte) vs achieved GMAC/s, the
    compute and the L2 / LLC / DRAM bandwidth ceilings, one point per layer sized by its time, the
    five slowest layers labelled."""
    layers = _layer_rows(rows)
    if not layers:
        return "no layer rows (segbench profile) with intensity and achieved_gmacs"
    groups = list(dict.fromkeys((r["model"], r.get("runtime")) for r in layers))
    fig, axes = _figure(ncols=len(groups), width=7.0 * len(groups))
    for ax, (model, runtime) in zip(axes[0], groups):
        sel = [r for r in layers if (r["model"], r.get("runtime")) == (model, runtime) and r["intensity"] > 0]
        if not sel:
            continue
        xs, ys = [r["intensity"] for r in sel], [max(r["achieved_gmacs"], 1e-3) for r in sel]
        total = sum(r["layer_ms"] for r in sel)
        ax.scatter(xs, ys, s=[20 + 600 * r["layer_ms"] / total for r in sel], alpha=0.5)
        roofs, peak = sel[0], sel[0]["peak_gmacs"]
        grid = [min(xs) / 2 * (max(xs) * 4 / (min(xs) / 2)) ** (i / 50) for i in range(51)]
        for level, style in (("l2", ":"), ("llc", "--"), ("dram", "-.")):
            bandwidth = number(roofs.get(f"bandwidth_gbs_{level}"))
            if bandwidth:
                ax.plot(
                    grid, [min(peak, bandwidth * x) for x in grid], style, label=f"{level.upper()} {bandwidth:.0f} GB/s"
                )
        ax.axhline(peak, color="black", linewidth=0.8, label=f"peak {peak:.0f} GMAC/s")
        slowest = sorted(range(len(sel)), key=lambda i: -sel[i]["layer_ms"])[:5]
        _annotate(ax, [xs[i] for i in slowest], [ys[i] for i in slowest], [str(sel[i]["layer"])[-40:] for i in slowest])
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("arithmetic intensity (MAC / byte of compulsory traffic)")
        ax.set_ylabel("achieved GMAC/s (MACs are multiply-accumulates)")
        ax.set_title(f"roofline: {model} ({runtime})\npoint area: share of the layer time", fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    _save(fig, path)
    return None


def plot_layer_time_by_op(rows: Sequence[Row], path: Path) -> str | None:
    """Per model x runtime, the layer time summed by op type (conv, dwconv, pwconv, bn, ...), with the
    floor of the same layers beside it: where the time goes and how much of it the hardware needs."""
    layers = [r for r in rows if r.get("kind") == "layer" and number(r.get("layer_ms")) and r.get("op")]
    if not layers:
        return "no layer rows (segbench profile) with layer_ms and op"
    groups = list(dict.fromkeys((r["model"], r.get("runtime")) for r in layers))
    fig, axes = _figure(ncols=len(groups), width=7.0 * len(groups))
    for ax, (model, runtime) in zip(axes[0], groups):
        sel = [r for r in layers if (r["model"], r.get("runtime")) == (model, runtime)]
        ops: dict[str, list[float]] = {}
        for r in sel:
            ops.setdefault(r["op"], [0.0, 0.0])
            ops[r["op"]][0] += r["layer_ms"]
            ops[r["op"]][1] += number(r.get("roofline_ms")) or 0.0
        names = sorted(ops, key=lambda op: -ops[op][0])
        positions = list(range(len(names)))
        ax.barh([p + 0.2 for p in positions], [ops[n][0] for n in names], height=0.4, label="measured")
        ax.barh([p - 0.2 for p in positions], [ops[n][1] for n in names], height=0.4, label="roofline floor")
        ax.set_yticks(positions, names)
        ax.invert_yaxis()
        ax.set_xlabel("ms per forward pass")
        ax.set_title(f"layer time by op: {model} ({runtime})", fontsize=10)
        ax.legend(fontsize=8)
    _save(fig, path)
    return None


def plot_load(rows: Sequence[Row], path: Path) -> str | None:
    """Miss rate against load (streams or requests/s) per model x runtime x variant, the found maximum
    starred and the miss budget dashed: where the curve crosses the budget is what the machine sustains."""
    data = [
        r
        for r in _model_rows(rows)
        if r.get("scenario") in ("streams", "server") and number(r.get("deadline_miss_rate")) is not None
    ]
    if not data:
        return "no streams or server rows with deadline_miss_rate"
    fig, axes = _figure()
    ax = axes[0][0]
    curves: dict[tuple[Any, ...], list[Row]] = {}
    for row in data:
        curves.setdefault((row["model"], row.get("runtime"), row.get("precision"), row["scenario"]), []).append(row)
    for n, ((model, runtime, precision, scenario), curve) in enumerate(curves.items()):
        load = "streams" if scenario == "streams" else "qps"
        part = sorted((r for r in curve if r.get("search") != "unconfirmed"), key=lambda r: float(r[load]))
        refuted = [r for r in curve if r.get("search") == "unconfirmed"]
        color = f"C{n % 10}"
        ax.plot(
            [r[load] for r in part],
            [r["deadline_miss_rate"] for r in part],
            "o-",
            color=color,
            label=f"{model} {runtime} {precision} ({load})",
        )
        ax.plot([r[load] for r in refuted], [r["deadline_miss_rate"] for r in refuted], "x", color=color, markersize=9)
        for row in part:
            if row.get("search") == "max":
                ax.plot([row[load]], [row["deadline_miss_rate"]], "*", color=color, markersize=16, zorder=5)
                ax.annotate(
                    f"max {row[load]:g}",
                    (row[load], row["deadline_miss_rate"]),
                    textcoords="offset points",
                    xytext=(6, 6),
                    fontsize=8,
                )
    for budget in {r["miss_budget"] for r in data if r.get("miss_budget") is not None}:
        ax.axhline(budget, linestyle="--", color="grey", linewidth=1)
    ax.set_xlabel("load (camera streams, or requests/s for server)")
    ax.set_ylabel("deadline miss rate")
    ax.set_title(
        "Miss rate against load\nstar: the largest load confirmed within the budget (dashed); x: a confirmation run that failed",
        fontsize=10,
    )
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    _save(fig, path)
    return None


PLOTS: dict[str, Callable[[Sequence[Row], Path], str | None]] = {
    "miou_vs_latency": plot_miou_latency,
    "macs_vs_latency": plot_macs_latency,
    "k2_study": plot_k2_study,
    "load_miss_rate": plot_load,
    "roofline": plot_roofline,
    "layer_time_by_op": plot_layer_time_by_op,
}
