#!/bin/sh
# Regenerate the curated manifests from the IDC index packaged with idc-index-data.
# Run from the repository root: sh sample_manifests/regenerate.sh
set -e
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
fetch() { "$PY" -m wsitranscode fetch --collection rms --dry-run --json "$@" >/dev/null; }
fetch --lossless-only --max-series-size 500MB --limit 1 --seed 0 --manifest sample_manifests/rms-1-small-lossless.s5cmd
fetch --lossless-only --limit 10 --seed 0 --manifest sample_manifests/rms-10-lossless.s5cmd
fetch --limit 100 --seed 0 --manifest sample_manifests/rms-100-random-seed0.s5cmd
fetch --with-annotations --manifest sample_manifests/rms-all.s5cmd
