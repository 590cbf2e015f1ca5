"""Plots and the self-contained HTML page of a bench run (matplotlib, imported lazily).

Plots, one PNG each (small: 5 x 3.6 in at 90 dpi): `rd-<metric>.png`, the rate-distortion curve
of every codec (mean, with a band of one standard deviation over tiles), the JPEG q80 point
marked by a star and a dotted line as in the paper's figures; `time.png`, encode and decode time
per tile (single-thread and all-cores, averaged over the swept qualities) on a log scale.
"""

from __future__ import annotations

import io
from collections import defaultdict
from pathlib import Path
from typing import Any

from wsitranscode.report.html import STYLE, _data_uri, _e, _figure, _pyplot

PAPER_BPP_RANGE = 1.75  # the paper's x axis: 0 to 1.75 bpp
LOWER_IS_BETTER = {"lpips"}
TIME_BARS = (
    ("encode_ms_1t", "encode, 1 thread"),
    ("encode_ms_all", "encode, all cores"),
    ("decode_ms_1t", "decode, 1 thread"),
    ("decode_ms_all", "decode, all cores"),
)


def plot_name(metric: str) -> str:
    return "rd-" + metric.replace(":", "-")


def save_plots(result: Any, out_dir: Path) -> list[Path]:
    plt = _pyplot()
    paths = []
    for metric in _metrics(result.points):
        fig = _rate_distortion(plt, result, metric)
        paths.append(_save(fig, out_dir / f"{plot_name(metric)}.png", plt))
    if any(p.get("timing") for p in result.points):
        paths.append(_save(_time_bars(plt, result), out_dir / "time.png", plt))
    return paths


def _save(fig: Any, path: Path, plt: Any) -> Path:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    path.write_bytes(buffer.getvalue())
    return path


def _metrics(points: list[dict[str, Any]]) -> list[str]:
    names: list[str] = []
    for p in points:
        names += [
            m for m, s in p["metrics"].items() if m not in names and s.get("mean") is not None
        ]
    return names


def _rate_distortion(plt: Any, result: Any, metric: str) -> Any:
    fig, ax = plt.subplots(figsize=(5, 3.6))
    by_codec: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for p in result.points:
        if p["metrics"].get(metric, {}).get("mean") is not None:
            by_codec[p["codec"]].append(p)
    for codec, points in by_codec.items():
        points.sort(key=lambda p: p["bpp"])
        bpp = [p["bpp"] for p in points]
        mean = [p["metrics"][metric]["mean"] for p in points]
        std = [p["metrics"][metric].get("std") or 0.0 for p in points]
        (line,) = ax.plot(bpp, mean, marker="o", markersize=3, label=codec)
        low = [m - s for m, s in zip(mean, std, strict=True)]
        high = [m + s for m, s in zip(mean, std, strict=True)]
        ax.fill_between(bpp, low, high, color=line.get_color(), alpha=0.15, linewidth=0)
    reference = result.reference
    ref_value = (reference or {}).get("metrics", {}).get(metric, {}).get("mean")
    if reference and ref_value is not None:
        ax.axvline(reference["bpp"], color="grey", linestyle=":", linewidth=1)
        ax.plot(
            [reference["bpp"]], [ref_value], marker="*", markersize=11, color="black",
            linestyle="none", label=f"JPEG q80 ({reference['bpp']:.2f} bpp)",
        )  # fmt: skip
    ax.set_xlim(0, _x_limit(result))
    ax.set_xlabel("bits per pixel")
    ax.set_ylabel(metric + (" (lower is better)" if metric in LOWER_IS_BETTER else ""))
    ax.set_title(f"{metric}, {result.track} track, {len(result.tiles)} tiles", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return fig


def _x_limit(result: Any) -> float:
    """The paper's 0-1.75 bpp, widened to show the JPEG q80 point, never beyond the data."""
    highest = max((p["bpp"] for p in result.points), default=PAPER_BPP_RANGE)
    reference = (result.reference or {}).get("bpp", 0.0)
    return min(highest * 1.02, max(PAPER_BPP_RANGE, reference * 1.4))


def _time_bars(plt: Any, result: Any) -> Any:
    codecs = list(dict.fromkeys(p["codec"] for p in result.points))
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    width = 0.8 / len(TIME_BARS)
    for index, (key, label) in enumerate(TIME_BARS):
        values = [_mean_timing(result.points, codec, key) for codec in codecs]
        if all(v is None for v in values):
            continue
        xs = [c + (index - (len(TIME_BARS) - 1) / 2) * width for c in range(len(codecs))]
        ax.bar(xs, [v or 0.0 for v in values], width, label=label)
    ax.set_xticks(range(len(codecs)), codecs)
    ax.set_yscale("log")
    ax.set_ylabel("ms per tile")
    size = result.options.get("tile_size")
    workers = result.options.get("workers")
    ax.set_title(f"time per {size} px tile (all cores = {workers} threads)", fontsize=10)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=7)
    return fig


def _mean_timing(points: list[dict[str, Any]], codec: str, key: str) -> float | None:
    values = [p["timing"][key] for p in points if p["codec"] == codec and key in p["timing"]]
    return sum(values) / len(values) if values else None


# ---------------------------------------------------------------------------------------------
# HTML


def render_html(result: Any, plots: list[Path]) -> str:
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<title>wsitranscode bench</title>",
        f"<style>{STYLE}</style></head><body>",
        f"<h1>wsitranscode bench: {_e(result.track)} track</h1>",
        _header(result),
        _notes(result),
        _bd_table(result.bd_rates),
        "<h2>Plots</h2>",
        *(_figure(p.stem, _data_uri(p.read_bytes())) for p in plots),
        _matched_tables(result.matched),
        _points_table(result),
        "</body></html>",
    ]
    return "\n".join(part for part in parts if part)


def _header(result: Any) -> str:
    options, env = result.options, result.environment
    rows = {
        "inputs": ", ".join(options.get("inputs", [])),
        "tiles": f"{len(result.tiles)} of {options.get('tile_size')} px",
        "seed": options.get("seed"),
        "track": result.track
        + (f" (precompressed with {options['precompress']})" if options.get("precompress") else ""),
        "codecs": ", ".join(options.get("codecs", [])),
        "qualities": ", ".join(str(q) for q in options.get("qualities", [])),
        "machine": f"{env.get('processor')}, {env.get('cpu_count')} cores; "
        f"imagecodecs {env.get('imagecodecs')}",
        "created": result.created,
    }
    cells = "".join(
        f"<tr><th class='l'>{k}</th><td class='l'>{_e(v)}</td></tr>" for k, v in rows.items()
    )
    return f"<table>{cells}</table>"


def _notes(result: Any) -> str:
    lines = [*result.notes, *result.unavailable.values()]
    return "".join(f"<p class='note'>{_e(line)}</p>" for line in lines)


def _bd_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ""
    metrics = list(dict.fromkeys(r["metric"] for r in rows))
    codecs = list(dict.fromkeys(r["codec"] for r in rows))
    value = {(r["codec"], r["metric"]): r["bd_rate_percent"] for r in rows}
    head = "<tr><th class='l'>codec</th>" + "".join(f"<th>{_e(m)}</th>" for m in metrics) + "</tr>"
    body = "".join(
        f"<tr><td class='l'>{_e(c)}</td>"
        + "".join(f"<td>{_pct(value.get((c, m)))}</td>" for m in metrics)
        + "</tr>"
        for c in codecs
    )
    method = rows[0]["method"]
    return (
        f"<h2>BD-rate against {_e(rows[0]['anchor'])} ({_e(method)})</h2>"
        "<p class='note'>negative = fewer bits for the same quality</p>"
        f"<table>{head}{body}</table>"
    )


def _pct(value: float | None) -> str:
    return "" if value is None else f"{value:+.1f} %"


def _matched_tables(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ""
    parts = ["<h2>At matched bitrate</h2>"]
    for metric in dict.fromkeys(r["metric"] for r in rows):
        mine = [r for r in rows if r["metric"] == metric]
        targets = list(dict.fromkeys(r["at"] for r in mine))
        codecs = list(dict.fromkeys(r["codec"] for r in mine))
        value = {(r["codec"], r["at"]): r["value"] for r in mine}
        head = "<tr><th class='l'>codec</th>" + "".join(f"<th>{_e(t)}</th>" for t in targets)
        body = "".join(
            f"<tr><td class='l'>{_e(c)}</td>"
            + "".join(f"<td>{_num(value.get((c, t)))}</td>" for t in targets)
            + "</tr>"
            for c in codecs
        )
        parts.append(f"<h3>{_e(metric)}</h3><table>{head}</tr>{body}</table>")
    return "".join(parts)


def _num(value: Any) -> str:
    return "" if value is None else f"{value:.4g}"


def _points_table(result: Any) -> str:
    from wsitranscode.bench import point_rows

    columns, rows = point_rows(result)
    shown = [c for c in columns if c not in ("track", "description") and not c.endswith("_std")]
    head = "".join(f"<th>{_e(c)}</th>" for c in shown)
    body = "".join(
        "<tr>" + "".join(f"<td>{_cell(row.get(c))}</td>" for c in shown) + "</tr>" for row in rows
    )
    return f"<h2>All points</h2><table><tr>{head}</tr>{body}</table>"


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return _e(value)
