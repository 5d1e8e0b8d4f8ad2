#!/usr/bin/env bash
# `make run`: starts the whole stack on loopback, in the foreground, on the example config:
#   a demo origin (127.0.0.1:18081), the local cloud side (stunnel server on 127.0.0.1:18443
#   in front of a cloud Squid), and fps-controller supervising Squid (127.0.0.1:8080) and the
#   stunnel client. Ctrl-C stops everything.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${FPS_BIN_DIR:-$ROOT/build} # the tests run it with the sanitizer builds
# Squid drops to user `proxy`, which must reach the state directory and the hosts file. A
# checkout under a private directory (/root is mode 0700, so is `mktemp -d`) is out of its
# reach: then the run directory lives under /var/tmp instead (the controller itself copies
# the helpers fps-auth/fps-acl where Squid can execute them).
if [ -n "${FPS_RUN_DIR:-}" ]; then
	RUN=$FPS_RUN_DIR
elif [ "$(id -u)" != 0 ] || runuser -u proxy -- test -x "$ROOT"; then
	RUN=$ROOT/run
else
	RUN=/var/tmp/fps-run-$(printf '%s' "$ROOT" | sha1sum | cut -c1-8)
	echo "note: user proxy cannot enter $ROOT (a private directory): the run directory is $RUN"
fi

mkdir -p "$RUN"/{config,secrets,state,www,cloud}
chmod 755 "$RUN" "$RUN"/www "$RUN"/config
chmod 700 "$RUN"/secrets

# Names the demo uses, all on loopback: Squid reads this hosts file (proxy.hosts_file) instead
# of DNS, so a name you whitelist must be here too. Lines below the marker survive `make run`.
MARK='# Your own names below this line (Squid reads this file when it starts):'
mine=$(sed -n "/^$MARK\$/,\$p" "$RUN/hosts" 2>/dev/null | tail -n +2 | sed "/^$/d" || true)
cat > "$RUN/hosts" <<HOSTS
127.0.0.1 updates.example.test files.example.test a.cdn.example.test download.example-vendor.test
127.0.0.1 api.example-vendor.test not-listed.example.test tunnel.fps.test
$MARK
${mine}
HOSTS
chmod 644 "$RUN/hosts"

# The ConfigMap: kept across runs so your edits survive a restart.
[ -f "$RUN/config/fps.yaml" ] ||
	sed "s|^  hosts_file: .*|  hosts_file: $RUN/hosts|" "$ROOT/examples/config/fps.yaml" > "$RUN/config/fps.yaml"
[ -f "$RUN/config/whitelist.json" ] || cp "$ROOT/examples/config/whitelist.json" "$RUN/config/"

# The Secret: an API key valid for 30 days; the tunnel CA and a client certificate made by the
# cloud side (below).
if [ ! -f "$RUN/secrets/apikeys.json" ]; then
	KEY=$(openssl rand -hex 24)
	EXP=$(date -u -d '+30 days' +%Y-%m-%dT%H:%M:%SZ)
	printf '{"keys": [{"id": "demo", "key": "%s", "expires": "%s"}]}\n' "$KEY" "$EXP" > "$RUN/secrets/apikeys.json"
	chmod 600 "$RUN/secrets/apikeys.json"
fi
KEY=$(sed -n 's/.*"key": "\([^"]*\)".*/\1/p' "$RUN/secrets/apikeys.json")
USER_NAME=ApexOne-1b4e28ba-2fa1-11d2-883f-0016d3cca427
PASS=$(printf '%s%s' "$USER_NAME" "$KEY" | sha1sum | cut -d' ' -f1)

echo "hello from the demo origin" > "$RUN/www/index.html"

pids=()
cleanup() {
	trap - EXIT INT TERM
	for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

/usr/bin/python3 -m http.server 18081 --bind 127.0.0.1 --directory "$RUN/www" >/dev/null 2>&1 &
pids+=($!)

if [ -x "$ROOT/examples/cloud/run-cloud.sh" ]; then
	FPS_CLOUD_HOSTS_FILE="$RUN/hosts" "$ROOT/examples/cloud/run-cloud.sh" "$RUN/cloud" 18443 13128 tunnel.fps.test > "$RUN/cloud.log" 2>&1 &
	pids+=($!)
	for _ in $(seq 100); do [ -f "$RUN/cloud/ca.pem" ] && [ -s "$RUN/cloud/appliance.pem" ] && break; sleep 0.1; done
	cp "$RUN/cloud/ca.pem" "$RUN/secrets/tunnel-ca.pem"
	# The cloud side requires a client certificate from its appliance CA (mTLS): this
	# appliance's, issued by run-cloud.sh the way the backend issues one at registration.
	cp "$RUN/cloud/appliance.pem" "$RUN/secrets/tunnel-client.pem"
	cp "$RUN/cloud/appliance.key" "$RUN/secrets/tunnel-client.key"
	chmod 600 "$RUN/secrets/tunnel-client.key"
fi

cat <<MSG

FPS is starting on 127.0.0.1:8080 (admin on 127.0.0.1:8079). Try, in another shell:

  curl -x http://127.0.0.1:8080 -U '$USER_NAME:$PASS' http://updates.example.test:18081/      # 200, direct
  curl -x http://127.0.0.1:8080 -U '$USER_NAME:$PASS' http://api.example-vendor.test:18081/   # 200, via the tunnel
  curl -x http://127.0.0.1:8080 -U '$USER_NAME:$PASS' http://not-listed.example.test:18081/   # 403, not whitelisted
  curl -x http://127.0.0.1:8080 http://updates.example.test:18081/                            # 407, no credentials
  curl -s 127.0.0.1:8079/status | python3 -m json.tool

Edit the whitelist (it applies within a second, without restarting Squid):

  \$EDITOR $RUN/config/whitelist.json

A name you whitelist must also resolve: the demo names are on 127.0.0.1 in $RUN/hosts, and any
other name goes to the DNS server in fps.yaml (none answers in the demo, so such a name gets
Squid's DNS error page, a 5xx, instead of the 200 or 403 you expect).
To add one, append "127.0.0.1 NAME" to $RUN/hosts below the marker line and restart make run:
Squid reads that file only when it starts.

Logs: this terminal (controller), $RUN/state/run/access.log and cache.log (Squid).
MSG

"$BIN/fps-controller" run --config-dir "$RUN/config" --secrets-dir "$RUN/secrets" --state-dir "$RUN/state" &
pids+=($!)
wait "${pids[-1]}"
