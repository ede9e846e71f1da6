#!/usr/bin/env bash
# The player libraries the origin serves itself (no CDN), from the npm
# registry. Rerun to update; commit the results.
set -euo pipefail
cd "$(dirname "$0")"
tmp=$(mktemp -d)
(cd "$tmp" && npm pack hls.js@1.7.4 dashjs@5.2.1 >/dev/null && for f in *.tgz; do mkdir "${f%.tgz}" && tar xzf "$f" -C "${f%.tgz}"; done)
cp "$tmp"/hls.js-1.7.4/package/dist/hls.min.js .
cp "$tmp"/hls.js-1.7.4/package/LICENSE LICENSE.hls.js
cp "$tmp"/dashjs-5.2.1/package/dist/modern/umd/dash.mediaplayer.min.js .
cp "$tmp"/dashjs-5.2.1/package/LICENSE.md LICENSE.dashjs
rm -rf "$tmp"
