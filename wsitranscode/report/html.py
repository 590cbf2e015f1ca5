"""report.html: one self-contained page (styles inline, images as base64 PNG data URIs)."""

from __future__ import annotations

import base64
import html
import io
import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from wsitranscode.report.files import (
    savings_figures,
    series_status,
    series_totals,
    totals_text,
)

SUMMARY_METRICS = (
    "psnr",
    "psnr-frames",
    "psnr-recode",
    "max-abs-error",
    "ssim",
    "ms-ssim",
    "lpips",
    "feature:avgpool",
)
RD_METRICS = ("psnr", "ms-ssim", "lpips", "feature:fc", "psnr-frames", "psnr-recode")
# What each summary column is: three PSNRs with three definitions, so each says which it is.
METRIC_HEADERS = {
    "psnr": "PSNR dB (tiles¹)",
    "psnr-frames": "PSNR dB (every frame²)",
    "psnr-recode": "PSNR dB (recode³)",
    "max-abs-error": "max abs error (tiles¹)",
}
SERIES_TABLE_NOTES = (
    "¹ over the sampled tiles, or every frame when none were sampled; PSNR at the source's bit "
    "depth (peak 2^BitsStored − 1), exact tiles counted as 100 dB.",
    "² mean of per-frame PSNRs over every compared VOLUME frame (validate).",
    "³ PSNR of the mean squared error over all frames, from the recode run record.",
    "Failed series have no savings figures and are left out of the totals.",
)
STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:1400px}
table{border-collapse:collapse;margin:1em 0;font-size:13px}
th,td{border:1px solid #ccc;padding:3px 6px;text-align:right}
th{background:#f3f3f3} td.l,th.l{text-align:left}
.err{color:#b00020} .ok{color:#1b5e20} .note{color:#555;font-size:13px}
figure{display:inline-block;margin:0.5em;vertical-align:top} figcaption{font-size:12px}
img{max-width:100%}
"""


def render_html(data: dict[str, Any], tiles: Sequence[dict[str, Any]], folder: Path) -> str:
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<title>wsitranscode quality report</title>",
        f"<style>{STYLE}</style></head><body>",
        "<h1>wsitranscode quality report</h1>",
        _header(data),
        _series_table(data.get("series", [])),
        _totals(data.get("series", [])),
        _rate_distortion(data.get("series", [])),
    ]
    tiles_by_series: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in tiles:
        tiles_by_series[str(row.get("series"))].append(row)
    for number, series in enumerate(data.get("series", [])):
        series_tiles = [
            t
            for t in tiles_by_series.get(str(series.get("recoded_series_uid")), [])
            if not series.get("run") or t.get("run") in (None, "", series.get("run"))
        ]
        parts.append(_series_section(number, series, series_tiles, folder))
    parts.append("</body></html>")
    return "\n".join(parts)


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _header(data: dict[str, Any]) -> str:
    rows = []
    for key in ("original", "recoded", "created", "tool"):
        if data.get(key):
            rows.append(f"<tr><th class='l'>{key}</th><td class='l'>{_e(data[key])}</td></tr>")
    for run in data.get("runs", []):
        rows.append(f"<tr><th class='l'>run</th><td class='l'>{_e(run)}</td></tr>")
    errors = [*data.get("errors", []), *(e for s in data.get("series", []) for e in s["errors"])]
    verdict = (
        "<p class='ok'><b>All checks passed.</b></p>"
        if not errors
        else f"<p class='err'><b>{len(errors)} problem(s):</b></p><ul class='err'>"
        + "".join(f"<li>{_e(e)}</li>" for e in errors[:200])
        + "</ul>"
    )
    return f"<table>{''.join(rows)}</table>{verdict}"


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or value == "":
        return ""
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return _e(value)


def _series_table(series: Sequence[dict[str, Any]]) -> str:
    metrics = [m for m in SUMMARY_METRICS if any(m in s.get("metrics", {}) for s in series)]
    head = (
        "<tr><th class='l'>recode</th><th class='l'>status</th><th class='l'>source series</th>"
        "<th>bytes before</th><th>bytes after</th><th>ratio</th><th>bpp</th><th>savings %</th>"
        "<th>encode s</th><th>decode s</th><th>exact</th><th>max abs error</th>"
        + "".join(
            f"<th>{_e(METRIC_HEADERS.get(m, m))}<br>mean ± sd</th>"
            f"<th>{_e(METRIC_HEADERS.get(m, m))}<br>p5 / worst</th>"
            for m in metrics
        )
        + "</tr>"
    )
    rows = [_series_row(s, metrics) for s in series]
    notes = "".join(f"<p class='note'>{_e(n)}</p>" for n in SERIES_TABLE_NOTES)
    return f"<h2>Series</h2><table>{head}{''.join(rows)}</table>{notes}"


def _series_row(s: dict[str, Any], metrics: Sequence[str]) -> str:
    exact = s.get("pixel_exact") if s.get("byte_exact") is None else s.get("byte_exact")
    figures = savings_figures(s)
    status = series_status(s)
    status_class = "ok" if status in ("ok", "done-before") else "err"
    cells = [
        f"<td class='l'>{_e(s.get('label'))}</td>",
        f"<td class='l {status_class}'>{_e(status)}</td>",
        f"<td class='l'>{_e(s.get('source_series_uid'))}</td>",
        f"<td>{_e(s.get('bytes_before'))}</td><td>{_e(figures['bytes_after'])}</td>",
        f"<td>{_fmt(figures['ratio'], 2)}</td><td>{_fmt(figures['bpp'], 3)}</td>",
        f"<td>{_fmt(figures['savings_percent'], 1)}</td>",
        f"<td>{_fmt(s.get('encode_seconds'), 2)}</td>",
        f"<td>{_fmt(s.get('decode_seconds'), 2)}</td>",
        f"<td>{_e(exact)}</td><td>{_e(s.get('max_abs_error'))}</td>",
    ]
    for m in metrics:
        st = s.get("metrics", {}).get(m, {})
        mean = "" if st.get("mean") is None else f"{st['mean']:.4g} ± {st.get('std', 0):.2g}"
        p5 = "" if st.get("p5") is None else f"{st['p5']:.4g} / {st['worst']:.4g}"
        cells.append(f"<td>{mean}</td><td>{p5}</td>")
    return f"<tr>{''.join(cells)}</tr>"


def _totals(series: Sequence[dict[str, Any]]) -> str:
    totals = series_totals(series)
    if not totals["series"]:
        return ""
    text = totals_text(totals)
    return f"<p class='totals'>{_e(text[0].upper() + text[1:])}.</p>"


def _png(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return _data_uri(buffer.getvalue())


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _figure(title: str, uri: str, caption: str = "") -> str:
    return (
        f"<figure><img alt='{_e(title)}' src='{uri}'>"
        f"<figcaption>{_e(caption or title)}</figcaption></figure>"
    )


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _rate_distortion(series: Sequence[dict[str, Any]]) -> str:
    """bpp against each metric, one curve per codec, for sources recoded more than once."""
    by_source: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for s in series:
        if s.get("bpp") is not None and s.get("source_series_uid"):
            by_source[s["source_series_uid"]].append(s)
    groups = {uid: items for uid, items in by_source.items() if len(items) > 1}
    if not groups:
        return ""
    plt = _pyplot()
    figures = []
    points = [s for items in groups.values() for s in items]
    for metric in RD_METRICS:
        with_metric = [s for s in points if s.get("metrics", {}).get(metric, {}).get("mean")]
        if len(with_metric) < 2:
            continue
        fig, ax = plt.subplots(figsize=(5, 3.6))
        by_codec: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for s in with_metric:
            by_codec[str(s.get("codec") or s.get("label"))].append(s)
        for codec, items in sorted(by_codec.items()):
            items.sort(key=lambda s: s["bpp"])
            ax.errorbar(
                [s["bpp"] for s in items],
                [s["metrics"][metric]["mean"] for s in items],
                yerr=[s["metrics"][metric].get("std") or 0 for s in items],
                marker="o",
                capsize=3,
                label=codec,
            )
        reference = [s for s in with_metric if s.get("codec") == "jpeg" and s.get("quality") == 80]
        if reference:
            ax.axvline(reference[0]["bpp"], color="grey", linestyle="--", label="JPEG q80")
        ax.set_xlabel("bits per pixel")
        ax.set_ylabel(metric)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        figures.append(_figure(f"rate-distortion {metric}", _png(fig)))
    if not figures:
        return ""
    return "<h2>Rate-distortion</h2>" + "".join(figures)


def _series_section(
    number: int, series: dict[str, Any], tiles: Sequence[dict[str, Any]], folder: Path
) -> str:
    parts = [
        f"<h2>{_e(series.get('label') or 'series')} — {_e(series.get('recoded_series_uid'))}</h2>"
    ]
    parts += [f"<p class='note'>{_e(n)}</p>" for n in series.get("notes", [])]
    parts += [
        f"<p class='note'>{_e(reason)}</p>" for reason in series.get("unavailable", {}).values()
    ]
    plt = _pyplot()
    psnr = _values([t for t in tiles if t.get("kind") == "sample"] or tiles, "psnr")
    if psnr:
        fig, ax = plt.subplots(figsize=(5, 3.2))
        ax.hist(psnr, bins=30, color="#3465a4")
        ax.set_xlabel("PSNR per tile (dB; exact tiles at 100)")
        ax.set_ylabel("tiles")
        parts.append(_figure(f"histogram PSNR series {number}", _png(fig), "Per-tile PSNR"))
    feature_rows = [t for t in tiles if str(t.get("metric", "")).startswith("feature:")]
    if feature_rows:
        fig, ax = plt.subplots(figsize=(5, 3.2))
        for depth in sorted({t["metric"] for t in feature_rows}):
            ax.hist(_values(tiles, depth), bins=30, histtype="step", label=depth[8:])
        ax.set_xlabel("cosine similarity of features")
        ax.set_ylabel("tiles")
        ax.legend(fontsize=7)
        parts.append(_figure(f"histogram feature series {number}", _png(fig), "Feature similarity"))
    elif "feature" in series.get("unavailable", {}):
        parts.append("<p class='note'>Feature similarity histogram: metric unavailable.</p>")
    heat = _heatmap(series, folder, plt)
    if heat:
        parts.append(_figure(f"heat map series {number}", heat, "Level-0 frame PSNR on thumbnail"))
    parts.append(_worst_tiles(series, folder))
    return "\n".join(parts)


def _values(tiles: Sequence[dict[str, Any]], metric: str) -> list[float]:
    out = []
    for t in tiles:
        if t.get("metric") != metric:
            continue
        value = t.get("value")
        if value in (None, ""):
            if metric == "psnr" and t.get("note") == "exact":
                out.append(100.0)
            continue
        value = float(value)
        if math.isfinite(value):
            out.append(value)
    return out


def _heatmap(series: dict[str, Any], folder: Path, plt: Any) -> str | None:
    import numpy as np

    thumb_name = series.get("thumbnail")
    if not thumb_name or not (folder / thumb_name).is_file():
        return None
    import imagecodecs

    thumb = imagecodecs.imread(str(folder / thumb_name))
    heat = series.get("heatmap")
    fig, ax = plt.subplots(figsize=(6, 6 * thumb.shape[0] / max(thumb.shape[1], 1)))
    if heat:
        width, height = heat["width"], heat["height"]
        ax.imshow(thumb, extent=(0, width, height, 0))
        grid = np.full(
            (math.ceil(height / heat["tile_height"]), math.ceil(width / heat["tile_width"])),
            np.nan,
        )
        for x, y, value in heat["cells"]:
            grid[y // heat["tile_height"], x // heat["tile_width"]] = value
        shown = ax.imshow(
            grid,
            extent=(0, grid.shape[1] * heat["tile_width"], grid.shape[0] * heat["tile_height"], 0),
            cmap="RdYlGn",
            alpha=0.45,
            interpolation="nearest",
        )
        ax.set_xlim(0, width)
        ax.set_ylim(height, 0)
        fig.colorbar(shown, ax=ax, label="PSNR (dB)", shrink=0.7)
    else:
        ax.imshow(thumb)
    ax.set_axis_off()
    return _png(fig)


def _worst_tiles(series: dict[str, Any], folder: Path) -> str:
    rows = []
    for tile in series.get("worst_tiles", []):
        files = tile.get("files") or {}
        cells = []
        for kind in ("original", "recoded", "difference"):
            name = files.get(kind)
            if name and (folder / name).is_file():
                uri = _data_uri((folder / name).read_bytes())
                cells.append(f"<td><img alt='{kind}' src='{uri}' width='224'></td>")
            else:
                cells.append("<td></td>")
        where = f"level {tile.get('level')} x {tile.get('x')} y {tile.get('y')}"
        if tile.get("frame") is not None:
            where += f", frame {tile['frame']}"
        rows.append(
            f"<tr><td class='l'>{_e(where)}<br>PSNR {_fmt(tile.get('psnr'), 2)} dB</td>"
            + "".join(cells)
            + "</tr>"
        )
    if not rows:
        return ""
    return (
        "<h3>Worst tiles</h3><table><tr><th class='l'>where</th><th>original</th>"
        "<th>recoded</th><th>difference × 8</th></tr>" + "".join(rows) + "</table>"
    )
