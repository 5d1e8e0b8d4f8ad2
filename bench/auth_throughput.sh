#!/bin/sh
# auth_throughput: verdicts per second of one auth helper process on one core, fps-auth against
# Squid's basic_ncsa_auth (htpasswd with apr1 hashes), same usernames, every line a valid login.
# fps-auth gets "ID user password" lines (concurrency channel IDs, as Squid sends with
# concurrency=N); basic_ncsa_auth does not speak concurrency and gets "user password".
# Input is generated beforehand and read from a file, so the feeder is not what is measured.
#
#   bench/auth_throughput.sh [LINES] [USERS] [RUNS]      (defaults: 1000000 1000 3)
#   env: FPS_AUTH (default build/fps-auth), NCSA_AUTH, NCSA_LINES (default LINES), CPU (default 0)
set -eu

LINES=${1:-1000000}
USERS=${2:-1000}
RUNS=${3:-3}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
FPS_AUTH=${FPS_AUTH:-$ROOT/build/fps-auth}
NCSA_AUTH=${NCSA_AUTH:-/usr/lib/squid/basic_ncsa_auth}
NCSA_LINES=${NCSA_LINES:-$LINES}
CPU=${CPU:-0}

[ -x "$FPS_AUTH" ] || { echo "auth_throughput: $FPS_AUTH missing: make build/fps-auth" >&2; exit 2; }
[ -x "$NCSA_AUTH" ] || { echo "auth_throughput: $NCSA_AUTH missing (package squid)" >&2; exit 2; }

WORK=$(mktemp -d /tmp/fps-auth-bench.XXXXXX)
trap 'rm -rf "$WORK"' EXIT INT TERM

# Keys (two overlapping ones, as in production), users and their passwords.
cat >"$WORK/apikeys.json" <<'EOF'
{"keys": [
  {"id": "2026-11", "key": "bench-key-2026-11-0123456789abcdef", "expires": "2099-12-24T00:00:00Z"},
  {"id": "2026-12", "key": "bench-key-2026-12-0123456789abcdef", "expires": "2099-12-31T00:00:00Z"}
]}
EOF
/usr/bin/python3 - "$WORK" "$LINES" "$USERS" "$NCSA_LINES" <<'EOF'
import hashlib, sys
work, lines, users, ncsa_lines = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
key = "bench-key-2026-12-0123456789abcdef"
creds = []
for i in range(users):
    u = "ApexOne-%08x-2fa1-11d2-883f-0016d3cca427" % i
    creds.append((u, hashlib.sha1((u + key).encode()).hexdigest()))
with open(work + "/users", "w") as f:
    f.writelines("%s %s\n" % c for c in creds)
with open(work + "/in-fps", "w") as f:
    f.writelines("%d %s %s\n" % (n % 64, *creds[n % users]) for n in range(lines))
with open(work + "/in-ncsa", "w") as f:
    f.writelines("%s %s\n" % creds[n % users] for n in range(ncsa_lines))
EOF
cut -d' ' -f2 "$WORK/users" | openssl passwd -apr1 -in /dev/stdin >"$WORK/hashes"
cut -d' ' -f1 "$WORK/users" | paste -d: - "$WORK/hashes" >"$WORK/htpasswd"

# run NAME EXPECTED_OK CMD...: prints elapsed seconds; fails unless every line was answered OK.
run() {
	name=$1 want=$2 input=$3
	shift 3
	t0=$(date +%s.%N)
	taskset -c "$CPU" "$@" <"$input" >"$WORK/out" 2>"$WORK/err"
	t1=$(date +%s.%N)
	ok=$(grep -c '^\([0-9]* \)\{0,1\}OK *$' "$WORK/out" || true)
	if [ "$ok" -ne "$want" ]; then
		echo "auth_throughput: $name answered OK $ok times, want $want" >&2
		head -3 "$WORK/out" "$WORK/err" >&2
		exit 1
	fi
	echo "$t1 - $t0" | bc -l
}

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

report() {
	name=$1 lines=$2
	shift 2
	: >"$WORK/times"
	i=0
	while [ "$i" -lt "$RUNS" ]; do
		run "$name" "$lines" "$@" >>"$WORK/times"
		i=$((i + 1))
	done
	secs=$(median <"$WORK/times")
	printf '%-16s %8d lines  runs(s): %s  median %.2fs  %10.0f verdicts/s\n' "$name" "$lines" \
		"$(tr '\n' ' ' <"$WORK/times")" "$secs" "$(echo "$lines / $secs" | bc -l)"
}

echo "one core (cpu $CPU), $USERS users, median of $RUNS runs"
report fps-auth "$LINES" "$WORK/in-fps" "$FPS_AUTH" --keys "$WORK/apikeys.json" --concurrency on
report basic_ncsa_auth "$NCSA_LINES" "$WORK/in-ncsa" "$NCSA_AUTH" "$WORK/htpasswd"
