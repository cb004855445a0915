#!/bin/bash
# Instructions per durable change through the API (issue 7's first target), counted by callgrind,
# which counts the same however loaded the machine is. flagpost runs under callgrind; wrk sends the
# change_path bench's script (a new identity override per request) on 64 connections; counts are
# zeroed after a 5 s warm-up and dumped after the timed run. Kernel time is not counted.
#   benches/callgrind/change_path.sh target/release/flagpost [seconds]
set -e
BIN=$1; SECS=${2:-15}; PORT=17601
SCRIPT=$(cd "$(dirname "$0")/.." && pwd)/change_path.lua
WORK=$(mktemp -d); trap '[ -n "$KEEP" ] && cp "$WORK"/cg.* "$KEEP"/; rm -rf "$WORK"' EXIT
mkdir -p "$WORK/flags"
cat > "$WORK/flagpost.toml" <<TOML
listen = "127.0.0.1:$PORT"
[storage]
path = "$WORK/flagpost.redb"
[flag_files]
dir = "$WORK/flags"
poll_every = "3600s"
[api]
tokens = [{ name = "bench", token = { value = "bench-token-0123456789" } }]
[[environments]]
id = 1
name = "Development"
api_key = "k"
project = 1
[[environments.webhooks]]
name = "parked"
url = "http://127.0.0.1:9/"
enabled = false
TOML
valgrind --tool=callgrind --separate-threads=yes --callgrind-out-file="$WORK/cg.%p" \
  "$BIN" serve --config "$WORK/flagpost.toml" > "$WORK/log" 2>&1 &
VG=$!
for _ in $(seq 1 600); do curl -sf "http://127.0.0.1:$PORT/healthz" > /dev/null && break; sleep 0.5; done
curl -sf -X POST "http://127.0.0.1:$PORT/api/v1/features" -H 'authorization: Bearer bench-token-0123456789' \
  -H 'content-type: application/json' -d '{"project":1,"name":"bench"}' > /dev/null
wrk -t2 -c64 -d5s -s "$SCRIPT" "http://127.0.0.1:$PORT/" > /dev/null
callgrind_control -z $VG > /dev/null
wrk -t2 -c64 -d${SECS}s -s "$SCRIPT" "http://127.0.0.1:$PORT/" > "$WORK/wrk.txt"
callgrind_control -d $VG > /dev/null
kill -TERM $VG; wait $VG || true
N=$(awk '/requests in/ {print $1}' "$WORK/wrk.txt")
TOTAL=$(cat "$WORK"/cg.*.1-* | awk '/^summary:/ {s += $2} END {print s}')
echo "changes=$N instructions=$TOTAL per_change=$((TOTAL / N))"
for f in "$WORK"/cg.*.1-*; do
  awk '/^thread:/ {t=$2} /^summary:/ {print "  thread " t ": " $2}' "$f"
done
