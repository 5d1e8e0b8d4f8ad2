#!/bin/sh
# A local FPS cloud side on loopback, for `make run` and the integration tests:
# a stunnel server (TLS on TLS_PORT, the appliances' tunnel endpoint) in front of a
# plain cloud Squid on SQUID_PORT. Runs in the foreground; SIGTERM/SIGINT stop both.
#
#   examples/cloud/run-cloud.sh DIR TLS_PORT SQUID_PORT [SERVER_NAME]
#
# DIR receives the PKI (ca.pem, ca.key, server.pem, server.key, and appliance-ca.* and
# appliance.* below: created with the openssl CLI unless already there, so a test can bring its
# own), the rendered configs and logs.
# The appliance needs DIR/ca.pem as its Secret's tunnel-ca.pem and SERVER_NAME (default
# tunnel.fps.test) as tunnel.server, resolving to 127.0.0.1 (or tunnel.address), and
# DIR/appliance.pem and .key as tunnel-client.pem and .key.
# Environment:
#   FPS_CLOUD_HOSTS_FILE   hosts file the cloud Squid resolves with [/etc/hosts]
#   FPS_CLOUD_LISTEN       address the stunnel server accepts on [127.0.0.1]; the cloud Squid
#                          always listens on 127.0.0.1 (the bench runs the cloud side in its own
#                          network namespace and sets this to the namespace's veth address)
#   FPS_CLOUD_DNS          its DNS server [127.0.0.1]
#   FPS_CLOUD_CLIENT_CA    the CA whose client certificates appliances must present (mTLS, as the
#                          shipped cloud side). Unset: DIR/appliance-ca.pem, created with
#                          DIR/appliance.pem and DIR/appliance.key, a client certificate for the
#                          demo and the tests (the appliance's tunnel-client.pem/.key).
#                          "none": no client certificate asked (anyone reaching TLS_PORT gets
#                          through; for experiments only)
#   FPS_CLOUD_CLIENT_CRL   optional CRL of that CA (stunnel's CRLfile): revoked certificates fail
#   FPS_CLOUD_DEBUG        stunnel log level [4: warnings; 5 logs every connection]
#   FPS_CLOUD_WORKERS      cloud Squid workers [1]
#   FPS_CLOUD_STUNNEL_TUNABLES  GLIBC_TUNABLES for stunnel [glibc.malloc.mmap_max=0]; stunnel
#                          sets a 4 KiB mmap threshold, which turns every TLS record buffer into
#                          an mmap+munmap (bench/routes/NOTES.md); empty = leave stunnel alone
set -eu

if [ $# -lt 3 ]; then
	echo "usage: $0 DIR TLS_PORT SQUID_PORT [SERVER_NAME]" >&2
	exit 2
fi
DIR=$(realpath -m "$1")
TLS_PORT=$2
SQUID_PORT=$3
NAME=${4:-tunnel.fps.test}
HERE=$(cd "$(dirname "$0")" && pwd)
TEMPLATES=${FPS_STUNNEL_TEMPLATES_DIR:-$HERE/../../stunnel-conf}
SQUID=${FPS_SQUID_BIN:-/usr/sbin/squid}
STUNNEL=${FPS_STUNNEL_BIN:-/usr/bin/stunnel4}

mkdir -p "$DIR"
# Squid drops to user proxy: its config, logs and pid file must be reachable.
chmod 755 "$DIR"

# ---- PKI: a CA and a server certificate for NAME (ECDSA P-256: a full handshake costs
# the server a fraction of what RSA-2048 does, which matters when peers reconnect).
if [ ! -s "$DIR/ca.pem" ] || [ ! -s "$DIR/ca.key" ]; then
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
		-subj "/CN=FPS Cloud Tunnel CA" -keyout "$DIR/ca.key" -out "$DIR/ca.pem" 2>/dev/null
fi
if [ ! -s "$DIR/server.pem" ] || [ ! -s "$DIR/server.key" ]; then
	openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$NAME" \
		-keyout "$DIR/server.key" -out "$DIR/server.csr" 2>/dev/null
	printf 'subjectAltName=DNS:%s\nextendedKeyUsage=serverAuth\n' "$NAME" >"$DIR/server.ext"
	openssl x509 -req -in "$DIR/server.csr" -CA "$DIR/ca.pem" -CAkey "$DIR/ca.key" -CAcreateserial \
		-days 30 -extfile "$DIR/server.ext" -out "$DIR/server.pem" 2>/dev/null
fi
chmod 600 "$DIR/ca.key" "$DIR/server.key"
# The appliance CA (it signs the appliances' client certificates; not the server's CA) and one
# appliance certificate, for the demo and the tests.
CLIENT_CA=${FPS_CLOUD_CLIENT_CA:-}
if [ -z "$CLIENT_CA" ]; then
	if [ ! -s "$DIR/appliance-ca.pem" ] || [ ! -s "$DIR/appliance-ca.key" ]; then
		openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
			-subj "/CN=FPS Appliance CA" -keyout "$DIR/appliance-ca.key" -out "$DIR/appliance-ca.pem" 2>/dev/null
	fi
	if [ ! -s "$DIR/appliance.pem" ] || [ ! -s "$DIR/appliance.key" ]; then
		openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=fps-demo-appliance" \
			-keyout "$DIR/appliance.key" -out "$DIR/appliance.csr" 2>/dev/null
		printf 'extendedKeyUsage=clientAuth\n' >"$DIR/appliance.ext"
		openssl x509 -req -in "$DIR/appliance.csr" -CA "$DIR/appliance-ca.pem" -CAkey "$DIR/appliance-ca.key" \
			-CAcreateserial -days 30 -extfile "$DIR/appliance.ext" -out "$DIR/appliance.pem" 2>/dev/null
	fi
	chmod 600 "$DIR/appliance-ca.key" "$DIR/appliance.key"
	CLIENT_CA=$DIR/appliance-ca.pem
fi

# ---- render: {{NAME}} placeholders, values are paths and ports we chose above.
render() { # template output var=value...
	tmpl=$1 out=$2
	shift 2
	cp "$tmpl" "$out.tmp"
	for kv in "$@"; do
		k=${kv%%=*} v=${kv#*=}
		# '|' cannot appear in our values (paths under DIR, ports, names).
		sed -i "s|{{$k}}|$v|g" "$out.tmp"
	done
	if grep -q '{{' "$out.tmp"; then
		echo "$0: $tmpl: unfilled placeholder: $(grep -o '{{[A-Z_]*}}' "$out.tmp" | head -1)" >&2
		exit 1
	fi
	mv "$out.tmp" "$out"
}

VERIFY="; client certificates: not required (FPS_CLOUD_CLIENT_CA=none)"
if [ "$CLIENT_CA" != none ]; then
	VERIFY="verifyChain = yes\\nrequireCert = yes\\nCAfile = $(realpath "$CLIENT_CA")"
	if [ -n "${FPS_CLOUD_CLIENT_CRL:-}" ]; then
		VERIFY="$VERIFY\\nCRLfile = $(realpath "$FPS_CLOUD_CLIENT_CRL")"
	fi
fi
render "$TEMPLATES/server.conf.tmpl" "$DIR/stunnel-server.conf" \
	"PID_FILE=$DIR/stunnel-server.pid" "DEBUG=${FPS_CLOUD_DEBUG:-4}" \
	"ACCEPT=${FPS_CLOUD_LISTEN:-127.0.0.1}:$TLS_PORT" "CONNECT=127.0.0.1:$SQUID_PORT" \
	"CERT_FILE=$DIR/server.pem" "KEY_FILE=$DIR/server.key" "CLIENT_VERIFY=$VERIFY"
WORKERS=${FPS_CLOUD_WORKERS:-1}
# Squid cannot raise its descriptor limit past the hard limit it inherits.
MAX_FDS=$(ulimit -Hn)
case $MAX_FDS in unlimited) MAX_FDS=65536 ;; esac
[ "$MAX_FDS" -gt 65536 ] && MAX_FDS=65536
render "$TEMPLATES/cloud-squid.conf.tmpl" "$DIR/cloud-squid.conf" \
	"LISTEN=127.0.0.1:$SQUID_PORT" "DIR=$DIR" "NAME=fps-cloud-$SQUID_PORT" "MAX_FDS=$MAX_FDS" \
	"HOSTS_FILE=${FPS_CLOUD_HOSTS_FILE:-/etc/hosts}" "DNS=${FPS_CLOUD_DNS:-127.0.0.1}"
if [ "$WORKERS" -gt 1 ]; then
	echo "workers $WORKERS" >>"$DIR/cloud-squid.conf"
fi
touch "$DIR/cloud-access.log" "$DIR/cloud-cache.log"
chown proxy:proxy "$DIR/cloud-access.log" "$DIR/cloud-cache.log" 2>/dev/null || true

# ---- run both; either exiting, or a signal to us, stops the other.
SQUID_PID= STUNNEL_PID=
stop() {
	trap - TERM INT EXIT
	[ -n "$STUNNEL_PID" ] && kill "$STUNNEL_PID" 2>/dev/null || true
	[ -n "$SQUID_PID" ] && kill "$SQUID_PID" 2>/dev/null || true
	wait 2>/dev/null || true
}
trap 'stop; exit 0' TERM INT
trap stop EXIT

if [ "$WORKERS" -gt 1 ]; then
	# SMP needs --foreground and a distinct service name per instance (docs/squid-facts.md).
	"$SQUID" --foreground -n "fpscloud$SQUID_PORT" -f "$DIR/cloud-squid.conf" &
else
	"$SQUID" -N -f "$DIR/cloud-squid.conf" &
fi
SQUID_PID=$!
TUNABLES=${FPS_CLOUD_STUNNEL_TUNABLES-glibc.malloc.mmap_max=0}
if [ -n "$TUNABLES" ]; then
	GLIBC_TUNABLES=$TUNABLES "$STUNNEL" "$DIR/stunnel-server.conf" &
else
	"$STUNNEL" "$DIR/stunnel-server.conf" &
fi
STUNNEL_PID=$!
echo "fps cloud: stunnel server ${FPS_CLOUD_LISTEN:-127.0.0.1}:$TLS_PORT ($NAME, CA $DIR/ca.pem, client certificates: $CLIENT_CA) -> cloud squid 127.0.0.1:$SQUID_PORT" >&2

# Whichever child ends first ends the demo (dash has no `wait -n`: poll both).
while kill -0 "$SQUID_PID" 2>/dev/null && kill -0 "$STUNNEL_PID" 2>/dev/null; do
	sleep 1
done
echo "fps cloud: a child exited; stopping" >&2
stop
exit 1
