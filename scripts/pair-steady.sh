#!/bin/bash
# Two samplers measured side by side in their steady state, for BENCHMARKS.md: as
# scripts/pair-rate.sh, but gen runs DURATION seconds (default 45) and each sampler's spans
# per CPU-second are taken between FROM seconds (default 15) and one second before gen ends,
# when the decision cache is full and every decision evicts one (in a 15 s run it fills only
# for the last third of the decisions).
# Usage, from the repository: scripts/pair-steady.sh BIN_A BIN_B [DURATION [FROM]]
# (build first: cargo build --release -p tailgate -p loadtest). Loopback only; stops by itself
# (gen runs DURATION seconds, the sinks DURATION + 20 at most).
# Prints: A=<spans per CPU-s> B=<spans per CPU-s> B/A=<ratio>. Swap A and B between runs.
set -euo pipefail
a=$1; b=$2; duration=${3:-45}; from=${4:-15}
L=target/release/tailgate-loadtest
tmp=$(mktemp -d)
declare -A sampler sink
start() { # i binary
  local i=$1 bin=$2
  "$L" sink --grpc "127.0.0.1:2${i}317" --http off --quiet --duration "$((duration + 20))s" > "$tmp/sink$i.log" 2>&1 &
  sink[$i]=$!
  "$bin" sampler --set "node=s$i" --set "receiver.grpc=127.0.0.1:2${i}517" \
    --set "receiver.http=127.0.0.1:2${i}518" --set "admin=127.0.0.1:2${i}519" \
    --set policy_file=examples/policy.yaml --set "exporter.endpoint=http://127.0.0.1:2${i}317" \
    > "$tmp/sampler$i.log" 2>&1 &
  sampler[$i]=$!
}
# CPU ticks and spans received of sampler i, now.
snap() {
  local i=$1
  echo "$(awk '{print $14+$15}' "/proc/${sampler[$i]}/stat")" \
    "$(curl -s "127.0.0.1:2${i}519/metrics" | awk '/^tailgate_spans_received_total/ {s+=$2} END {print s}')"
}
start 4 "$a"
start 5 "$b"
sleep 1
"$L" gen --endpoints grpc://127.0.0.1:24517 --rate 100000 --duration "${duration}s" --seed 7 > "$tmp/gen4.log" 2>&1 &
g4=$!
"$L" gen --endpoints grpc://127.0.0.1:25517 --rate 100000 --duration "${duration}s" --seed 7 > "$tmp/gen5.log" 2>&1 &
g5=$!
sleep "$from"
read -r t4 s4 < <(snap 4)
read -r t5 s5 < <(snap 5)
sleep "$((duration - from - 1))"
read -r u4 r4 < <(snap 4)
read -r u5 r5 < <(snap 5)
wait "$g4" "$g5"
for i in 4 5; do
  kill "${sampler[$i]}"; wait "${sampler[$i]}" 2>/dev/null || true
  kill "${sink[$i]}" 2>/dev/null || true
done
wait 2>/dev/null || true
rm -rf "$tmp"
awk -v hz="$(getconf CLK_TCK)" -v t4="$t4" -v u4="$u4" -v s4="$s4" -v r4="$r4" \
  -v t5="$t5" -v u5="$u5" -v s5="$s5" -v r5="$r5" 'BEGIN {
  a = (r4 - s4) / ((u4 - t4) / hz); b = (r5 - s5) / ((u5 - t5) / hz)
  printf "A=%d B=%d B/A=%.3f\n", a, b, b / a }'
