#!/usr/bin/env bash
# Builds the fuzz targets and, with a count, runs each that many times from a seed corpus made
# of the transcripts' client and server lines (docs/SECURITY.md, "Fuzzing").
#   fuzz/run.sh            build only (what CI does)
#   fuzz/run.sh 10000000   build, then 10 million executions of each target
set -euo pipefail
cd "$(dirname "$0")"
if ! cargo +nightly --version >/dev/null 2>&1; then
  if ! rustup toolchain install nightly --profile minimal; then
    echo "fuzz: no nightly toolchain and none can be installed here; fuzz targets not built" >&2
    exit 0
  fi
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi
targets=(codec server_lines)
cargo +nightly fuzz build
runs="${1:-}"
[ -z "$runs" ] && exit 0
# Seeds: every line the transcripts send (C> ...) or expect (C< ..., * as 1), with CRLF.
mkdir -p corpus/codec corpus/server_lines
i=0
for f in ../tests/transcripts/*.txt; do
  while IFS= read -r line; do
    case "$line" in
      ?\>\ *) printf '%s\r\n' "${line#?> }" | sed 's/\\r\\n/\r\n/g' > "corpus/codec/seed-$i"; i=$((i+1));;
      ?\<\ *) printf '%s\r\n' "${line#?< }" | sed 's/\*/1/g' > "corpus/server_lines/seed-$i"; i=$((i+1));;
    esac
  done < "$f"
done
for t in "${targets[@]}"; do
  echo "== $t: $runs runs"
  cargo +nightly fuzz run "$t" "corpus/$t" -- -runs="$runs" -max_len=4096 -timeout=10 2>&1 | tail -4
done
