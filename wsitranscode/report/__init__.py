"""Validation reports on disk: report.json, series.csv, tiles.csv and a self-contained report.html.

`write_report(data, tiles, out_dir)` writes all four; `load_reports(paths)` reads earlier
reports (a report folder, a report.json, or a recode output folder with its run record) so that
`wsitranscode report` can aggregate several runs into one.
"""

from wsitranscode.report.files import (
    SERIES_COLUMNS,
    TILE_COLUMNS,
    load_reports,
    merge_reports,
    write_report,
)

__all__ = ["SERIES_COLUMNS", "TILE_COLUMNS", "load_reports", "merge_reports", "write_report"]
