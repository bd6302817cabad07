#!/bin/sh
# Builds plugin.wasm with componentize-py (pip install componentize-py).
set -eu
cd "$(dirname "$0")"
componentize-py -d wit -w {{build_world}} componentize app -o plugin.wasm
