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
# codec and server_lines are the parsers alone; notification, switchboard and msncd play the
# input into a whole server's connection (fuzz_targets/common), about 1,000 runs a second.
targets=(codec server_lines notification switchboard msncd)
cargo +nightly fuzz build
runs="${1:-}"
[ -z "$runs" ] && exit 0
# Seeds: every line the transcripts send (C> ...) or expect (C< ..., * as 1), with CRLF.
mkdir -p corpus/codec corpus/server_lines corpus/notification corpus/switchboard corpus/msncd
# The session targets start from the hand-written inputs in seeds/ (first byte: log in first
# when its top bit is set) and from each transcript's client lines as one connection.
for t in notification switchboard msncd; do cp seeds/$t/* corpus/$t/; done
i=0
for f in ../tests/transcripts/*.txt; do
  while IFS= read -r line; do
    case "$line" in
      ?\>\ *) printf '%s\r\n' "${line#?> }" | sed 's/\\r\\n/\r\n/g' > "corpus/codec/seed-$i"; i=$((i+1));;
      ?\<\ *) printf '%s\r\n' "${line#?< }" | sed 's/\*/1/g' > "corpus/server_lines/seed-$i"; i=$((i+1));;
    esac
  done < "$f"
done
for f in ../tests/transcripts/*.txt; do
  c=$(sed -n 's/^\(.\)> .*/\1/p' "$f" | head -1)
  [ -z "$c" ] && continue
  # Logged in first (top bit) when the transcript logs that connection in.
  if grep -q "^login $c " "$f"; then first='\200'; else first='\0'; fi
  { printf "$first"; sed -n "s/^$c> //p" "$f" | sed 's/\\r\\n/\r\n/g; s/$/\r/'; } > "corpus/notification/$(basename "$f" .txt)"
done
for t in "${targets[@]}"; do
  echo "== $t: $runs runs"
  cargo +nightly fuzz run "$t" "corpus/$t" -- -runs="$runs" -max_len=4096 -timeout=30 2>&1 | tail -4
done
