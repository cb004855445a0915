#!/usr/bin/env bash
# Instructions per OFREP bulk answer (documents_bench's ofrep part: 50 flags, a context with 4
# traits), counted by callgrind: figures a loaded machine does not change, unlike rates.
#
#   receiver/benches/documents/ofrep_callgrind.sh RECEIVER_BINARY BENCH_BINARY [SECONDS]
#
# RECEIVER_BINARY: a release `flagpost-receiver`; BENCH_BINARY: the release documents_bench
# (`cargo bench -p flagpost-receiver --bench documents_bench --no-run` prints its path), which
# writes the bench's document and serves it as the upstream Flagsmith. Needs valgrind, wrk, curl.
# The receiver's counters are zeroed after a warm-up, then `wrk -t1 -c4` posts the context for
# SECONDS (default 10); the total is divided by the requests wrk completed.
set -euo pipefail
receiver=$(realpath "$1")
bench=$(realpath "$2")
seconds=${3:-10}
dir=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$dir"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_for() {
    for _ in $(seq 600); do curl -fs -o /dev/null "$1" && return 0; sleep 0.5; done
    echo "no answer from $1" >&2
    exit 1
}

"$bench" --write-document "$dir/document.json"
upstream=$(free_port)
"$bench" --minimal-server "$upstream" "$dir/document.json" &
pids+=($!)
wait_for "http://127.0.0.1:$upstream/"

port=$(free_port)
cat >"$dir/receiver.toml" <<EOF
listen = "127.0.0.1:$port"
storage_path = "$dir/receiver.redb"
snapshot_path = ""
[intake]
secrets = [{ value = "bench-secret" }]
[[environments]]
id = 1
keys = ["BenchClientKey0001"]
server_keys = ["ser.BenchServerKey0001"]
[environments.upstream]
url = "http://127.0.0.1:$upstream"
server_key = { value = "ser.BenchServerKey0001" }
EOF
RUST_LOG=warn valgrind --tool=callgrind --callgrind-out-file="$dir/callgrind.out" \
    "$receiver" serve --config "$dir/receiver.toml" 2>"$dir/valgrind.log" &
pids+=($!)
wait_for "http://127.0.0.1:$port/readyz"

body='{"context":{"targetingKey":"user-7","plan":"pro","sessions":12,"email":"someone@corp.test","country":"FR"}}'
url="http://127.0.0.1:$port/ofrep/v1/evaluate/flags"
for _ in $(seq 50); do
    curl -fs -o /dev/null -H 'X-API-Key: BenchClientKey0001' -H 'Content-Type: application/json' \
        -d "$body" "$url"
done
curl -fs -H 'X-API-Key: BenchClientKey0001' -H 'Content-Type: application/json' -d "$body" "$url" \
    | wc -c | xargs echo "answer bytes:"
callgrind_control -z >/dev/null 2>&1
cat >"$dir/post.lua" <<EOF
wrk.method = "POST"
wrk.body = '$body'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-API-Key"] = "BenchClientKey0001"
EOF
requests=$(wrk -t1 -c4 -d"${seconds}s" -s "$dir/post.lua" "$url" | awk '/requests in/ {print $1}')
callgrind_control -d >/dev/null 2>&1
sleep 1
total=$(awk '/^summary:/ {sum += $2} END {print sum}' "$dir"/callgrind.out*)
echo "requests: $requests"
echo "instructions: $total"
echo "instructions per request: $((total / requests))"
if [ -n "${KEEP_PROFILE:-}" ]; then
    cp "$dir"/callgrind.out* "$KEEP_PROFILE"/
fi
