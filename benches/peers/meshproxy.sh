#!/usr/bin/env bash
# Launcher for `../shared/peers-bench/run.sh --custom meshproxy=benches/peers/meshproxy.sh`: the
# project's meshproxy in static mode (--config, certificates from disk) as the peers' sidecar
# pair. Differs from the bench's own `launchers/meshproxy.sh` (read-only there) in two ways:
# - the suite the run pins ($SUITE, e.g. TLS_AES_128_GCM_SHA256) is meshproxy's
#   `tls.cipher_suites`, so the chain negotiates it as the peers do (the bench's sanity check
#   asserts it);
# - each side is one process, as for the peers (there side b is two): side a has two upstreams
#   (iperf and http), side b two inbound listeners (iperf and http, static mode's `inbound`
#   list) with one identity, so side b's RSS is one process's.
# Its files go to a directory of its own under $WORKDIR, so two meshproxy targets in one run (two
# builds compared side by side) never read each other's config (static mode watches it).
# MESHPROXY: absolute path of the binary (default: target/release/meshproxy of PROJECT, default
# PROJECT: the directory the bench was started from).
set -euo pipefail
side=$1
BIN=${MESHPROXY:-${PROJECT:-$PWD}/target/release/meshproxy}
WORKDIR=$(mktemp -d "$WORKDIR/meshproxy-$side.XXXXXX")
td=$(cat "$CERTS/trust-domain.txt")
id() { echo "spiffe://$td/ns/default/dc/dc1/svc/$1"; }
resume=$([ "${RESUME:-0}" = 1 ] && echo true || echo false)
suites=$([ -n "${SUITE:-}" ] && echo "[\"$SUITE\"]" || echo null)
tls="{\"resumption\": $resume, \"cipher_suites\": $suites}"
# The PKCS#8 copy of the key goes under $CERTS, which the bench deletes at the end of the run
# (unless --keep-work), so no private key outlives the run in its output directory.
KEYDIR=$(mktemp -d "$CERTS/meshproxy-$side.XXXXXX")
p8() { (umask 077; openssl pkcs8 -topk8 -nocrypt -in "$CERTS/$1.key" -out "$KEYDIR/mp-$1.p8"); }
export MESHPROXY_WORKER_THREADS=${WORKERS:-1}
if [ "$side" = a ]; then
  p8 web
  cat > "$WORKDIR/mp-a.json" <<CFG
{"cert": "$CERTS/web.pem", "key": "$KEYDIR/mp-web.p8", "trust_bundle": "$CERTS/ca.pem",
 "inbound": {"listen": "127.0.0.1:0", "local_app": "127.0.0.1:9"},
 "upstreams": [
  {"name": "iperf", "listen": "127.0.0.1:$A_IPERF", "addresses": ["127.0.0.1:$B_IPERF"], "spiffe_id": "$(id db)"},
  {"name": "http", "listen": "127.0.0.1:$A_HTTP", "addresses": ["127.0.0.1:$B_HTTP"], "spiffe_id": "$(id db)"}],
 "tls": $tls}
CFG
  exec "$BIN" run --config "$WORKDIR/mp-a.json"
else
  p8 db
  cat > "$WORKDIR/mp-b.json" <<CFG
{"cert": "$CERTS/db.pem", "key": "$KEYDIR/mp-db.p8", "trust_bundle": "$CERTS/ca.pem",
 "inbound": [
  {"name": "iperf", "listen": "127.0.0.1:$B_IPERF", "local_app": "127.0.0.1:$IPERF_PORT"},
  {"name": "http", "listen": "127.0.0.1:$B_HTTP", "local_app": "127.0.0.1:$HTTP_PORT"}],
 "allowed_sources": ["$(id web)"],
 "tls": $tls}
CFG
  exec "$BIN" run --config "$WORKDIR/mp-b.json"
fi
