#!/bin/sh
# Builds plugin.wasm with componentize-py (pip install componentize-py).
set -eu
cd "$(dirname "$0")"
componentize-py -d wit -w node-overlay-generator componentize app -o plugin.wasm
