#!/bin/bash
# Two samplers measured side by side for BENCHMARKS.md: the same span rate into each at the
# same time (each its own gen and sink), so both share the host's noise, and the ratio of
# their spans per sampler CPU-second is steadier than two runs one after the other.
# Usage, from the repository: scripts/pair-rate.sh RATE BIN_A BIN_B [sampler --set args...]
# (build first: cargo build --release -p tailgate -p loadtest). Loopback only; stops by itself
# (gen runs 15 s, the samplers are stopped 12 s after it, the sinks after 40 s at most).
# Prints: A=<spans per CPU-s> B=<spans per CPU-s> B/A=<ratio>. Swap A and B between runs.
set -euo pipefail
rate=$1; a=$2; b=$3; shift 3
L=target/release/tailgate-loadtest
tmp=$(mktemp -d)
declare -A sampler sink
start() { # i binary
  local i=$1 bin=$2
  "$L" sink --grpc "127.0.0.1:2${i}317" --http off --quiet --duration 40s > "$tmp/sink$i.log" 2>&1 &
  sink[$i]=$!
  "$bin" sampler --set "node=s$i" --set "receiver.grpc=127.0.0.1:2${i}517" \
    --set "receiver.http=127.0.0.1:2${i}518" --set "admin=127.0.0.1:2${i}519" \
    --set policy_file=examples/policy.yaml --set "exporter.endpoint=http://127.0.0.1:2${i}317" \
    "${@:3}" > "$tmp/sampler$i.log" 2>&1 &
  sampler[$i]=$!
}
start 4 "$a" "$@"
start 5 "$b" "$@"
sleep 1
"$L" gen --endpoints grpc://127.0.0.1:24517 --rate "$rate" --duration 15s --seed 7 > "$tmp/gen4.log" 2>&1 &
g4=$!
"$L" gen --endpoints grpc://127.0.0.1:25517 --rate "$rate" --duration 15s --seed 7 > "$tmp/gen5.log" 2>&1 &
g5=$!
wait "$g4" "$g5"
sleep 12
declare -A per
for i in 4 5; do
  p=${sampler[$i]}
  ticks=$(awk '{print $14+$15}' "/proc/$p/stat")
  spans=$(curl -s "127.0.0.1:2${i}519/metrics" | awk '/^tailgate_spans_received_total/ {s+=$2} END {print s}')
  per[$i]=$(awk -v n="$spans" -v t="$ticks" -v hz="$(getconf CLK_TCK)" 'BEGIN {printf "%d", n / (t / hz)}')
  kill "$p"; wait "$p" 2>/dev/null || true
  kill "${sink[$i]}" 2>/dev/null || true
done
wait 2>/dev/null || true
rm -rf "$tmp"
echo "A=${per[4]} B=${per[5]} B/A=$(awk -v a="${per[4]}" -v b="${per[5]}" 'BEGIN {printf "%.3f", b / a}')"
