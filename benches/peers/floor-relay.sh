#!/usr/bin/env bash
# Launcher for `../shared/peers-bench/run.sh --custom relay-floor=benches/peers/floor-relay.sh`:
# a pair of `floor_relay.c` processes (plaintext, one thread, one read and one write per message
# and direction) in the place of the sidecar pair. The name must start with `relay-` so the
# bench skips its mTLS refusal checks (there is no TLS to refuse with). It measures the floor
# any proxy pair pays on this machine (two more loopback hops, two more processes to wake)
# before it does any work of its own; see proxy/README.md, "Where the time goes".
set -euo pipefail
side=$1
here=$(cd "$(dirname "$0")" && pwd)
bin="$WORKDIR/floor_relay"
# Both sides start from the same script; each compiles into its own file and renames it, so
# neither ever runs a half-written binary.
tmp=$(mktemp "$WORKDIR/floor_relay.XXXXXX")
gcc -O2 -Wall -Wextra -o "$tmp" "$here/floor_relay.c"
mv -f "$tmp" "$bin"
if [ "$side" = a ]; then
  exec "$bin" "$A_IPERF:$B_IPERF" "$A_HTTP:$B_HTTP"
else
  exec "$bin" "$B_IPERF:$IPERF_PORT" "$B_HTTP:$HTTP_PORT"
fi
