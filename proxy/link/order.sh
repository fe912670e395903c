#!/usr/bin/env bash
# Regenerates proxy/link/hot-symbols.txt: the functions a static-mode meshproxy pair runs after
# start-up (handshakes both ways, keep-alive and new-connection HTTP, bulk in both directions,
# refused peers), which proxy/build.rs hands to the linker (lld's --symbol-ordering-file) for the
# release meshproxy so they sit together at the front of .text. Why: a sidecar's RSS is mostly
# code pages, and the kernel maps code in 64 KiB fault-around blocks, so hot functions scattered
# over 9 MB of text map most of it; packed, they map a fraction (issue 16, proxy/README.md).
#
# How: both proxies run under valgrind's callgrind, their counters zeroed once they print their
# ready line (so start-up code is left out, but the loops already running are counted), traffic goes through them with curl and openssl, and every function
# callgrind saw executed in the meshproxy binary is listed, hottest first. Needs valgrind, curl,
# openssl, python3 and ../shared/peers-bench/gen-certs.sh. Dev-time only: CI and the build never
# run it; a stale list costs memory, never correctness (unknown names are skipped).
#
#   usage: proxy/link/order.sh [MESHPROXY_BINARY]   (default: target/release/meshproxy)
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
bin=${1:-$root/target/release/meshproxy}
out=$root/proxy/link/hot-symbols.txt
work=$(mktemp -d /tmp/meshproxy-order.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
for tool in valgrind callgrind_control curl openssl python3; do
  command -v "$tool" >/dev/null || { echo "order.sh: $tool is needed (apt-get install valgrind curl openssl)" >&2; exit 1; }
done
bash "$root/../shared/peers-bench/gen-certs.sh" "$work/certs" >/dev/null
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
app=$(port); a_http=$(port); b_http=$(port)

# The application: HTTP/1.1 keep-alive; GET /big answers 8 MiB, POST echoes the body's length.
cat > "$work/app.py" <<'PY'
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def reply(self, body):
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers(); self.wfile.write(body)
    def do_GET(self): self.reply(b"x" * (8 << 20) if self.path == "/big" else b"hello from db\n")
    def do_POST(self): self.reply(str(len(self.rfile.read(int(self.headers["Content-Length"])))).encode())
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
PY
python3 "$work/app.py" "$app" & pids+=($!)

td=$(cat "$work/certs/trust-domain.txt")
for s in web db; do openssl pkcs8 -topk8 -nocrypt -in "$work/certs/$s.key" -out "$work/$s.p8"; chmod 600 "$work/$s.p8"; done
# configs SUITE: A's and B's static configs, pinned to one TLS 1.3 cipher suite.
configs() {
cat > "$work/a.json" <<CFG
{"cert": "$work/certs/web.pem", "key": "$work/web.p8", "trust_bundle": "$work/certs/ca.pem",
 "inbound": {"listen": "127.0.0.1:0", "local_app": "127.0.0.1:9"},
 "upstreams": [{"name": "http", "listen": "127.0.0.1:$a_http", "addresses": ["127.0.0.1:$b_http"],
                "spiffe_id": "spiffe://$td/ns/default/dc/dc1/svc/db"}],
 "tls": {"cipher_suites": ["$1"]}}
CFG
cat > "$work/b.json" <<CFG
{"cert": "$work/certs/db.pem", "key": "$work/db.p8", "trust_bundle": "$work/certs/ca.pem",
 "inbound": [{"name": "http", "listen": "127.0.0.1:$b_http", "local_app": "127.0.0.1:$app"}],
 "allowed_sources": ["spiffe://$td/ns/default/dc/dc1/svc/web"],
 "tls": {"cipher_suites": ["$1"]}}
CFG
}
wait_for() { for _ in $(seq 1 600); do grep -q "$1" "$2" && return 0; sleep 0.1; done; echo "order.sh: no '$1' in $2" >&2; cat "$2" >&2; exit 1; }
traffic() {
  local url=http://127.0.0.1:$a_http
  curl -sf "$url/" "$url/" "$url/" -o /dev/null -o /dev/null -o /dev/null   # keep-alive
  for _ in 1 2 3 4; do curl -sf -H 'Connection: close' "$url/" -o /dev/null & done; wait -n; wait -n; wait -n; wait -n
  curl -sf "$url/big" -o /dev/null                                         # bulk, B to A
  curl -sf --data-binary @"$work/body" "$url/up" -o /dev/null               # bulk, A to B
  # Refusals at B: plaintext, TLS without a client certificate, a foreign CA's certificate.
  curl -s --max-time 5 "http://127.0.0.1:$b_http/" -o /dev/null || true
  for args in "" "-cert $work/certs/rogue.pem -key $work/certs/rogue.key"; do
    # shellcheck disable=SC2086
    echo | timeout 10 openssl s_client -connect "127.0.0.1:$b_http" -CAfile "$work/certs/ca.pem" $args >/dev/null 2>&1 || true
  done
  curl -sf "$url/" -o /dev/null
}
# pair WRAPPER...: starts A and B under WRAPPER, waits for both ready lines; their PIDs in $pair.
pair() {
  pair=()
  for side in a b; do
    MESHPROXY_WORKER_THREADS=1 "$@" "$bin" run --config "$work/$side.json" > "$work/$side.log" 2>&1 &
    pair+=($!); pids+=($!)
  done
  wait_for "meshproxy: ready" "$work/a.log"; wait_for "meshproxy: ready" "$work/b.log"
}
stop_pair() { kill "${pair[@]}" 2>/dev/null || true; wait "${pair[@]}" 2>/dev/null || true; }
head -c $((8 << 20)) /dev/zero > "$work/body"

# Both suites the bench runs, for their AES-GCM paths.
for suite in TLS_AES_128_GCM_SHA256 TLS_AES_256_GCM_SHA384; do
  configs "$suite"
  # 1. callgrind: every function run, however rarely (aws-lc takes its non-AVX-512 paths there).
  pair valgrind --tool=callgrind --demangle=no --callgrind-out-file="$work/cg.%p"
  for p in "${pair[@]}"; do callgrind_control -z "$p" >/dev/null 2>&1; done
  traffic
  for p in "${pair[@]}"; do callgrind_control -d "$p" >/dev/null 2>&1; done
  stop_pair
  # 2. perf, when present: the same traffic natively, for the paths this CPU really takes.
  if command -v perf >/dev/null; then
    pair env
    perf record -q -F 20000 -o "$work/perf.$suite.data" -p "$(IFS=,; echo "${pair[*]}")" > /dev/null 2>&1 &
    perf_pid=$!
    for _ in $(seq 1 50); do [ -s "$work/perf.$suite.data" ] && break; sleep 0.1; done
    for _ in 1 2 3 4 5; do traffic; done   # sampled: more rounds, fewer misses
    kill -INT "$perf_pid"; wait "$perf_pid" || true
    stop_pair
    perf report -i "$work/perf.$suite.data" --stdio --no-children --sort dso,sym --no-demangle 2>/dev/null \
      | awk -v b="$(basename "$bin")" '$2 == b && $3 == "[.]" && $4 !~ /^0x/ {print $4}' >> "$work/perf.txt"
  fi
done

# Every function with cost in the binary's object, hottest first ("fn=(id) name" defines a name
# once; later lines reuse the id; cost lines follow their fn line).
python3 - "$bin" "$work"/cg.*.1 > "$out" <<'PY'
import collections, os, re, sys
binary = os.path.realpath(sys.argv[1])
cost = collections.Counter()
for path in sys.argv[2:]:
    obs, fns, ob, fn, cur_ob = {}, {}, None, None, None
    for line in open(path, errors="replace"):
        m = re.match(r"(c?ob|c?fn|c?fl|fi|fe)=\((\d+)\)(?: (.*))?", line)
        if m:
            kind, i, name = m.groups()
            table = obs if kind.endswith("ob") else fns if kind.endswith("fn") else None
            if table is not None and name:
                table[i] = name.strip()
            if kind == "ob": cur_ob = obs.get(i)
            if kind == "fn": fn = fns.get(i)
            continue
        if line[:1].isdigit() or line[:1] == "+" or line[:1] == "-":
            if fn and cur_ob and os.path.realpath(cur_ob) == binary:
                parts = line.split()
                cost[fn] += int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
for name, c in cost.most_common():
    if c > 0:
        print(name)
PY
# Then what only perf saw (the CPU's own crypto paths), in perf's order.
[ -s "$work/perf.txt" ] && awk '!seen[$0]++' "$work/perf.txt" | grep -vxFf "$out" >> "$out" || true
echo "order.sh: $(wc -l < "$out") functions -> $out"
