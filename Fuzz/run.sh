#!/usr/bin/env bash
# Builds the libFuzzer target for the sync wire decoders and runs it.
#   Fuzz/run.sh [SECONDS] [extra libFuzzer flags...]     (default 30 seconds)
# Findings (crash-*, leak-*, timeout-*) land in Fuzz/artifacts/; the corpus grows in Fuzz/corpus/.
set -euo pipefail
cd "$(dirname "$0")"
seconds="${1:-30}"
shift || true

swift build -c debug --scratch-path .build-fuzz \
    -Xswiftc -sanitize=fuzzer,address -Xswiftc -parse-as-library \
    --product SyncFuzz

bin="$(swift build -c debug --scratch-path .build-fuzz --show-bin-path)/SyncFuzz"
mkdir -p corpus artifacts
exec "$bin" corpus -max_total_time="$seconds" -max_len=4096 -artifact_prefix=artifacts/ "$@"
