"""report.json, series.csv, tiles.csv and report.html in one folder; reading them back.

Every series carries a status: recode's (ok, done-before, failed, skipped) for a series read
from a run record, "ok" or "errors" for a validated one. Savings figures (bytes after, ratio,
bpp, savings %) exist only where the recoded series was measured whole (`has_measured_sizes`):
a failed recode has none (never "100 % saved" from zero bytes after) and is left out of the
totals.
"""

from __future__ import annotations

import csv
import json
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from wsitranscode.errors import InvalidInputError, UsageError

SERIES_COLUMNS = (
    "run",
    "status",
    "label",
    "codec",
    "quality",
    "source_series_uid",
    "recoded_series_uid",
    "source_transfer_syntaxes",
    "source_photometric",
    "transfer_syntaxes",
    "lossless",
    "bytes_before",
    "bytes_after",
    "ratio",
    "bpp",
    "savings_percent",
    "encode_seconds",
    "decode_seconds",
    "frames",
    "frames_compared",
    "bits_stored",
    "max_abs_error",
    "pixel_exact",
    "byte_exact",
    "errors",
)
SAVINGS_FIGURES = ("bytes_after", "ratio", "bpp", "savings_percent")
NO_OUTPUT_STATUSES = {"failed", "skipped", "pending", "interrupted"}  # no whole output
METRIC_STATS = ("mean", "std", "p5", "worst", "n")
TILE_COLUMNS = (
    "run",
    "series",
    "kind",
    "level",
    "instance",
    "frame",
    "x",
    "y",
    "width",
    "height",
    "metric",
    "value",
    "note",
)


def write_report(data: dict[str, Any], tiles: Iterable[Any], out_dir: Path) -> dict[str, Path]:
    """Write the four report files; `tiles` are TileResult objects or tiles.csv rows (dicts)."""
    from wsitranscode.report.html import render_html

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": out_dir / "report.json",
        "series": out_dir / "series.csv",
        "tiles": out_dir / "tiles.csv",
        "html": out_dir / "report.html",
    }
    tile_rows = list(_tile_rows(tiles, data))
    data = {**data, "totals": series_totals(data.get("series", []))}
    paths["json"].write_text(json.dumps(data, indent=1, default=str, allow_nan=False))
    _write_csv(paths["series"], series_columns(data), series_rows(data))
    _write_csv(paths["tiles"], TILE_COLUMNS, tile_rows)
    paths["html"].write_text(render_html(data, tile_rows, out_dir), encoding="utf-8")
    return paths


def _run_name(data: dict[str, Any]) -> str:
    return str(data.get("recoded") or data.get("run") or "")


def metric_names(data: dict[str, Any]) -> list[str]:
    names: list[str] = []
    for series in data.get("series", []):
        names += [n for n in series.get("metrics", {}) if n not in names]
    return names


def series_columns(data: dict[str, Any]) -> list[str]:
    return [*SERIES_COLUMNS, *(f"{m}_{s}" for m in metric_names(data) for s in METRIC_STATS)]


def series_status(series: dict[str, Any]) -> str:
    """recode's status for a run record's series; "ok" or "errors" for a validated one."""
    if series.get("status"):
        return str(series["status"])
    return "errors" if series.get("errors") else "ok"


def has_measured_sizes(series: dict[str, Any]) -> bool:
    """Whether the series' sizes describe a whole recoded series (savings can be computed)."""
    if series_status(series) in NO_OUTPUT_STATUSES:
        return False
    return (series.get("bytes_before") or 0) > 0 and (series.get("bytes_after") or 0) > 0


def savings_figures(series: dict[str, Any]) -> dict[str, Any]:
    """bytes after, ratio, bpp and savings %: the series' own, or None without measured sizes."""
    measured = has_measured_sizes(series)
    return {key: series.get(key) if measured else None for key in SAVINGS_FIGURES}


def series_totals(series: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Sizes summed over the series with measured sizes; how many series were left out."""
    measured = [s for s in series if has_measured_sizes(s)]
    before = sum(s["bytes_before"] for s in measured)
    after = sum(s["bytes_after"] for s in measured)
    return {
        "series": len(series),
        "measured": len(measured),
        "not_measured": len(series) - len(measured),
        "failed": sum(1 for s in series if series_status(s) == "failed"),
        "bytes_before": before,
        "bytes_after": after,
        "ratio": round(before / after, 4) if after else None,
        "savings_percent": round(100.0 * (1 - after / before), 3) if before else None,
    }


def totals_text(totals: dict[str, Any]) -> str:
    """One line on the totals: sizes over the series with measured sizes, failed ones named as
    left out (the console and the HTML report both print it)."""
    text = (
        f"totals over {totals['measured']} of {totals['series']} series with measured sizes: "
        f"{totals['bytes_before']:,} bytes before, {totals['bytes_after']:,} after"
    )
    if totals["savings_percent"] is not None:
        text += f" (ratio {totals['ratio']:.2f}, savings {totals['savings_percent']:.1f} %)"
    if totals["failed"]:
        text += f"; {totals['failed']} failed series left out (no savings figures)"
    return text


def series_rows(data: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for series in data.get("series", []):
        row = {key: series.get(key) for key in SERIES_COLUMNS}
        row |= savings_figures(series)
        row["status"] = series_status(series)
        row["run"] = series.get("run") or _run_name(data)
        row["errors"] = len(series.get("errors", []))
        for key in ("source_transfer_syntaxes", "transfer_syntaxes"):
            row[key] = " ".join(series.get(key) or [])
        for name, stats in series.get("metrics", {}).items():
            for stat in METRIC_STATS:
                row[f"{name}_{stat}"] = stats.get(stat)
        rows.append(row)
    return rows


def _tile_rows(tiles: Iterable[Any], data: dict[str, Any]) -> Iterable[dict[str, Any]]:
    run = _run_name(data)
    for tile in tiles:
        if isinstance(tile, dict):
            yield tile
            continue
        base = {
            "run": run,
            "series": tile.series,
            "kind": tile.kind,
            "level": tile.level,
            "instance": tile.instance,
            "frame": tile.frame,
            "x": tile.x,
            "y": tile.y,
            "width": tile.width,
            "height": tile.height,
        }
        for metric, value in tile.values.items():
            note = tile.notes.get(metric, "")
            if metric == "psnr" and value is None and not note:
                note = "exact"
            yield {**base, "metric": metric, "value": value, "note": note}


def _write_csv(path: Path, columns: Sequence[str], rows: Iterable[dict[str, Any]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if v is None else v for k, v in row.items()})


# ---------------------------------------------------------------------------------------------
# Reading earlier reports and runs


def load_reports(paths: Sequence[Path]) -> list[tuple[dict[str, Any], list[dict[str, Any]], Path]]:
    """(report data, tile rows, folder) for each report folder, report.json or recode output."""
    from wsitranscode.recode import RUN_RECORD_NAME

    loaded = []
    for path in paths:
        path = Path(path)
        if not path.exists():
            raise UsageError(f"{path} does not exist")
        folder = path.parent if path.is_file() else path
        report_json = path if path.is_file() else path / "report.json"
        run_record = folder / RUN_RECORD_NAME
        if report_json.name == "report.json" and report_json.is_file():
            data = _read_json(report_json)
            tiles = _read_tiles(folder / "tiles.csv")
            loaded.append((data, tiles, folder))
        elif run_record.is_file():
            loaded.append((_from_run_record(_read_json(run_record), folder), [], folder))
        else:
            raise InvalidInputError(
                "neither a report (report.json) nor a recode output (wsitranscode-run.json)",
                path=path,
            )
    return loaded


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise InvalidInputError(f"unreadable JSON ({err})", path=path) from err
    if not isinstance(data, dict):
        raise InvalidInputError("not a JSON object", path=path)
    return data


def _read_tiles(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        row["value"] = float(row["value"]) if row.get("value") not in (None, "") else None
    return rows


RECODE_PSNR = "psnr-recode"  # recode's PSNR: of the mean squared error over all frames


def _from_run_record(record: dict[str, Any], folder: Path) -> dict[str, Any]:
    """A report-shaped view of a recode run: status, sizes, ratio, bpp and recode's own PSNR."""
    options = record.get("options", {}).get("fingerprint", {})
    series = [_run_record_series(item, options, folder) for item in record.get("series", [])]
    return {"kind": "run", "run": str(folder), "recoded": str(folder), "series": series}


def _run_record_series(
    item: dict[str, Any], options: dict[str, Any], folder: Path
) -> dict[str, Any]:
    from wsitranscode.recode import run_label

    summary = item.get("summary", {})
    instances = item.get("instances", [])
    before, after = summary.get("bytes_in") or 0, summary.get("bytes_out") or 0
    metrics = {}
    if summary.get("psnr_mean") is not None:
        metrics[RECODE_PSNR] = {"mean": summary["psnr_mean"], "worst": summary["psnr_min"]}
    series = {
        "run": str(folder),
        "status": item.get("status") or "",
        "label": run_label(options, item) or "?",
        "codec": options.get("codec"),
        "quality": None if options.get("lossless") else item.get("quality", options.get("quality")),
        "source_series_uid": item.get("series_instance_uid"),
        "recoded_series_uid": item.get("new_series_instance_uid"),
        "source_paths": [i["source_path"] for i in instances if i.get("source_path")],
        "source_transfer_syntaxes": item.get("source_transfer_syntaxes") or [],
        "source_photometric": item.get("source_photometric") or "",
        "lossless": summary.get("exact"),
        "bytes_before": before,
        "bytes_after": after,
        "ratio": summary.get("ratio"),
        "bpp": summary.get("bpp"),
        "savings_percent": round(100 * (1 - after / before), 3) if before and after else None,
        "encode_seconds": round(sum(i.get("encode_seconds", 0) for i in instances), 4),
        "frames": summary.get("frames"),
        "metrics": metrics,
        "errors": [item["error"]] if item.get("error") else [],
        "notes": ["from the recode run record: no validation tiles"],
    }
    return series | savings_figures(series)


def distinct_reports(
    loaded: Sequence[tuple[dict[str, Any], list[dict[str, Any]], Path]],
) -> list[tuple[dict[str, Any], list[dict[str, Any]], Path]]:
    """The loaded reports with each recoded series once: a validate report and the recode
    output it checked (or one folder given twice) would count its sizes twice. A validated row
    is kept over the run record's, which has no metrics; a report left empty is dropped."""
    validated = {
        s.get("recoded_series_uid")
        for data, _, _ in loaded
        if data.get("kind") != "run"
        for s in data.get("series", [])
    }
    seen: set[str] = set()
    kept = []
    for data, rows, folder in loaded:
        series = []
        for row in data.get("series", []):
            uid = row.get("recoded_series_uid")
            if uid and (uid in seen or (data.get("kind") == "run" and uid in validated)):
                continue
            if uid:
                seen.add(uid)
            series.append(row)
        if series or not data.get("series"):
            kept.append(({**data, "series": series}, rows, folder))
    return kept


def merge_reports(
    loaded: Sequence[tuple[dict[str, Any], list[dict[str, Any]], Path]], out_dir: Path
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """One report from several: series and tiles concatenated, images copied into `out_dir`."""
    merged: dict[str, Any] = {
        "kind": "aggregate",
        "runs": [],
        "series": [],
        "errors": [],
    }
    tiles: list[dict[str, Any]] = []
    for number, (data, rows, folder) in enumerate(distinct_reports(loaded)):
        run = _run_name(data) or str(folder)
        merged["runs"].append(run)
        merged["errors"] += data.get("errors", [])
        for series in data.get("series", []):
            copied = dict(series)
            copied["run"] = series.get("run") or run
            _copy_images(copied, folder, out_dir, f"run{number:03d}-")
            merged["series"].append(copied)
        tiles += [{**row, "run": row.get("run") or run} for row in rows]
    merged["ok"] = not merged["errors"] and all(not s.get("errors") for s in merged["series"])
    merged["totals"] = series_totals(merged["series"])
    return merged, tiles


def _copy_images(series: dict[str, Any], source: Path, out_dir: Path, prefix: str) -> None:
    def copy(name: str | None) -> str | None:
        if not name or not (source / name).is_file() or source.resolve() == out_dir.resolve():
            return name
        target = Path("images") / f"{prefix}{Path(name).name}"
        (out_dir / target).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / name, out_dir / target)
        return str(target)

    series["thumbnail"] = copy(series.get("thumbnail"))
    worst = []
    for tile in series.get("worst_tiles", []):
        tile = dict(tile)
        tile["files"] = {kind: copy(name) for kind, name in tile.get("files", {}).items()}
        worst.append(tile)
    series["worst_tiles"] = worst
