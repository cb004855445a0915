#!/bin/bash
# Instructions per signed delivery (issue 7's second target), counted by callgrind: the delivery
# bench's throughput phase (1 endpoint, 8 in flight, every outcome durably recorded), counted from
# the end of its backlog fill (the line it writes then) to its result row. The sink runs in the
# same process, on a thread of its own: its count is shown apart. Valgrind hides the CPU's SHA
# extensions, so SHA-256 runs in software under it; the count without it is shown too.
#   benches/callgrind/delivery.sh target/release/deps/delivery-<hash>
BIN=$1
WORK=$(mktemp -d); trap '[ -n "$KEEP" ] && cp "$WORK"/cg.* "$KEEP"/; rm -rf "$WORK"' EXIT
FLAGPOST_BENCH_ONLY=throughput FLAGPOST_BENCH_SECONDS=2 valgrind --tool=callgrind --separate-threads=yes \
  --callgrind-out-file="$WORK/cg.%p" "$BIN" --bench > "$WORK/out" 2> "$WORK/err" &
VG=$!
# The bench says when its backlog is filled and written back (a `sync` too short to be seen
# by polling for it).
while ! grep -q "backlog of .* filled" "$WORK/err"; do
  sleep 0.02
  kill -0 $VG 2> /dev/null || { echo "the bench ended before its phase: $(tail -3 "$WORK/err")" >&2; exit 1; }
done
callgrind_control -z $VG > /dev/null
while ! grep -q "signed deliveries" "$WORK/out"; do sleep 0.2; done
callgrind_control -d $VG > /dev/null
wait $VG
N=$(grep "signed deliveries" "$WORK/out" | sed -E 's/.*\(([0-9]+) in .*/\1/')
TOTAL=0; SINK=0; SHA=0
for f in "$WORK"/cg.*.1-*; do
  ir=$(awk '/^summary:/ {print $2}' "$f")
  sha=$(callgrind_annotate --inclusive=yes "$f" 2> /dev/null | awk '/sha256::compress256 \[/ {gsub(",", "", $1); print $1; exit}')
  if callgrind_annotate --inclusive=yes "$f" 2> /dev/null | grep -q "serve_minimal::{{closure}}::{{closure}} \["; then
    SINK=$((SINK + ir)); echo "  sink thread: $ir"
  else
    TOTAL=$((TOTAL + ir)); SHA=$((SHA + ${sha:-0})); echo "  thread: $ir (SHA-256 ${sha:-0})"
  fi
done
echo "deliveries=$N flagpost_instructions=$TOTAL per_delivery=$((TOTAL / N)) without_sha256=$(((TOTAL - SHA) / N)) sink_per_request=$((SINK / N))"
