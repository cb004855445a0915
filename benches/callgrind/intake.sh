#!/bin/bash
# Instructions per durably acknowledged web hook (issue 7's third target), counted by callgrind:
# flagpost-receiver (with its snapshot file, as receiver_bench runs it) takes 32 Python senders'
# signed web hooks (intake_load.py); counts are zeroed after an 8 s warm-up and dumped after the
# timed run. Valgrind hides the CPU's SHA extensions, so HMAC-SHA256 runs in software under it;
# the count without it is shown too.
#   benches/callgrind/intake.sh target/release/flagpost-receiver [seconds]   (KEEP=dir keeps the profiles)
BIN=$1; SECS=${2:-30}; PORT=17602; HERE=$(dirname "$0")
WORK=$(mktemp -d); trap '[ -n "$KEEP" ] && cp "$WORK"/cg.* "$KEEP"/; rm -rf "$WORK"' EXIT
cat > "$WORK/receiver.toml" <<TOML
listen = "127.0.0.1:$PORT"
storage_path = "$WORK/receiver.redb"
snapshot_path = "$WORK/snapshot.json"
[intake]
secrets = [{ value = "bench-secret" }]
[[environments]]
id = 1
keys = ["bench-key"]
TOML
valgrind --tool=callgrind --separate-threads=yes --callgrind-out-file="$WORK/cg.%p" \
  "$BIN" serve --config "$WORK/receiver.toml" > "$WORK/log" 2>&1 &
VG=$!
for _ in $(seq 1 600); do curl -sf "http://127.0.0.1:$PORT/healthz" > /dev/null && break; sleep 0.5; done
python3 "$HERE/intake_load.py" $PORT 8 1000 > /dev/null
callgrind_control -z $VG > /dev/null
python3 "$HERE/intake_load.py" $PORT "$SECS" 100000 > "$WORK/load"
callgrind_control -d $VG > /dev/null
kill -TERM $VG; wait $VG
N=$(sed -E 's/ok=([0-9]+) .*/\1/' "$WORK/load")
TOTAL=0; SHA=0
for f in "$WORK"/cg.*.1-*; do
  ir=$(awk '/^summary:/ {print $2}' "$f")
  sha=$(callgrind_annotate --inclusive=yes "$f" 2> /dev/null | awk '/sha256::compress256 \[/ {gsub(",", "", $1); print $1; exit}')
  TOTAL=$((TOTAL + ir)); SHA=$((SHA + ${sha:-0})); echo "  thread: $ir (SHA-256 ${sha:-0})"
done
echo "$(cat "$WORK/load") instructions=$TOTAL per_webhook=$((TOTAL / N)) without_sha256=$(((TOTAL - SHA) / N))"
