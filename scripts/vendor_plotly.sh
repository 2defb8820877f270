#!/bin/sh
# Refetch the plotly.js bundle the site ships (lensreport/site/vendor/): plotly.js's cartesian
# partial bundle from npm, which has every trace type the site's figures draw (heatmap and
# scatter) at a third of the full bundle's bytes. Its version is the one the installed plotly
# Python package bundles (its plotly.min.js stays the renderer of static exports, through
# kaleido), so both draw with the same plotly.js. Run it after upgrading plotly:
#     sh scripts/vendor_plotly.sh [VERSION]
set -eu
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
VERSION=${1:-$("$PY" -c 'import plotly.offline; print(plotly.offline.get_plotlyjs_version())')}
PACKAGE=plotly.js-cartesian-dist-min
DEST=lensreport/site/vendor
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
(cd "$WORK" && npm pack --silent "$PACKAGE@$VERSION" >/dev/null && tar xzf ./*.tgz)
head -c 200 "$WORK/package/plotly-cartesian.min.js" | grep -q "v$VERSION" || {
  echo "vendor_plotly.sh: $PACKAGE@$VERSION does not say v$VERSION in its header" >&2; exit 1; }
mkdir -p "$DEST"
cp "$WORK/package/plotly-cartesian.min.js" "$DEST/plotly-cartesian.min.js"
cp "$WORK/package/LICENSE" "$DEST/plotly.js-LICENSE"
echo "$DEST/plotly-cartesian.min.js: $PACKAGE@$VERSION, $(wc -c < "$DEST/plotly-cartesian.min.js") bytes"
