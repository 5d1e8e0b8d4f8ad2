#!/usr/bin/env bash
# README's promise on a fresh Debian 12 machine that boots systemd, as root: `make test` as the
# first command from /root passes, and `make run` after it serves (no package's server in the way:
# `apt-get install squid` starts squid.service there, unless the Makefile's policy-rc.d stops it).
#
#   tests/systemd/run.sh          # as root, on a Debian 12 host with podman and debootstrap
#                                 # (`make image-deps`); the log goes to /var/tmp/fps-systemd-*.log
#   KEEP=1 tests/systemd/run.sh   # leave the container running to look or re-run tests in it:
#       podman exec -it -w /root/fps NAME bash -l
#       podman exec -w /root/fps NAME bash -lc 'make integration PYTEST_ARGS="-k test_x"'
#   TARGETS="all asan unit" tests/systemd/run.sh   # other targets than `test`
#   APT_CACHE=/var/cache/apt/archives tests/systemd/run.sh   # reuse this host's downloaded .debs
#       (an overlay: the container's apt writes nothing back; only downloads are saved)
#   NEW_BASE=1 ...                # debootstrap the machine again (else the image is reused)
#
# The machine:
#   - Its root filesystem is `debootstrap bookworm` with the default variant (the required and
#     important packages: what the Debian installer puts on every machine, systemd as init) plus
#     dbus, from the mirror this host's apt uses, and the sources.list the installer writes
#     (bookworm, bookworm-updates, bookworm-security). No make, no git: the README's
#     `apt-get install make` comes first; the checkout is a `git archive` (no .git) of HEAD and
#     the uncommitted changes of tracked files, put in /root/fps (/root is mode 0700).
#   - podman runs it with systemd as PID 1 (--systemd=always), in a network namespace of its own
#     (slirp4netns: outbound to Debian's mirror only), with what a real machine has and podman's
#     defaults take away: --privileged (the tests create network namespaces, and `make
#     test-image` runs podman inside), no pid limit (podman's default 2048 for the whole
#     machine), /dev/shm of half the RAM (podman's 64 MB is less than Squid's SMP shared memory),
#     and /var/lib/containers on a volume (the nested podman's overlay storage cannot sit on
#     the outer container's overlay root).
# After `make test`: squid.service (and every unit the installs enabled) is neither running nor
# enabled, no daemon listens, and `make run` answers its four printed curl commands with the
# codes it prints and `fps-controller diagnose` works without flags.
# shellcheck disable=SC2016 # the single-quoted commands expand in the container
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
export CONTAINERS_CONF=${CONTAINERS_CONF:-$ROOT/deploy/image/containers.conf}
PODMAN=(podman --runtime runc)
BASE=${BASE:-localhost/fps-deb12-systemd}
NAME=${NAME:-fps-deb12-systemd-$$}
# `make test` ends with `make test-image`, podman inside this podman container. On a host with
# the hybrid cgroup v1 layout (this project's build machine), the nested runc cannot start a
# container: "error mounting "cgroup" to rootfs at "/sys/fs/cgroup": stat
# /sys/fs/cgroup/systemd/system.slice/runc-buildah-....scope: no such file or directory" (systemd
# cgroup manager; with cgroupfs: "stat /sys/fs/buildah-...: no such file or directory"). There
# the default is every part of `make test` but test-image; TARGETS=test tries it all the same.
if [ "$(stat -fc %T /sys/fs/cgroup)" = cgroup2fs ]; then TARGETS=${TARGETS:-test}; else
	TARGETS=${TARGETS:-test-deps image-deps all asan unit integration}; fi
LOG=${LOG:-/var/tmp/fps-systemd-$(date -u +%Y%m%d-%H%M%S).log}
[ "$(id -u)" = 0 ] || { echo "run as root (podman with --privileged, debootstrap)"; exit 2; }

t0=$(date +%s)
step() { echo "== $(date -u +%H:%M:%S) (+$(($(date +%s) - t0)) s) $*" | tee -a "$LOG"; }
in_box() { "${PODMAN[@]}" exec -w /root "$NAME" bash -lc "$1"; }
fail() { step "FAILED: $*"; exit 1; }

cleanup() {
	if [ -n "${KEEP:-}" ]; then
		echo "kept: container $NAME (podman rm -f $NAME; podman volume rm $NAME-containers)"
		return
	fi
	"${PODMAN[@]}" rm -f -t 10 "$NAME" >/dev/null 2>&1
	"${PODMAN[@]}" volume rm -f "$NAME-containers" >/dev/null 2>&1
	echo "removed container $NAME; the machine's image stays: podman rmi $BASE"
}

# debian_mirror: the Debian archive apt uses here.
# shellcheck source=deploy/image/debian-mirror.sh
. "$ROOT/deploy/image/debian-mirror.sh"

if [ -n "${NEW_BASE:-}" ] || ! "${PODMAN[@]}" image exists "$BASE"; then
	MIRROR=${DEBIAN_MIRROR:-$(debian_mirror)}
	step "debootstrap bookworm (default variant, +dbus) from $MIRROR"
	tmp=$(mktemp -d /var/tmp/fps-deb12-rootfs.XXXXXX)
	trap 'rm -rf "$tmp"' EXIT
	debootstrap --include=dbus bookworm "$tmp/root" "$MIRROR" > "$tmp/debootstrap.log" 2>&1 ||
		{ tail -20 "$tmp/debootstrap.log"; fail "debootstrap"; }
	SEC=${MIRROR%/debian}/debian-security
	printf 'deb %s bookworm main\ndeb %s bookworm-updates main\ndeb %s bookworm-security main\n' \
		"$MIRROR" "$MIRROR" "$SEC" > "$tmp/root/etc/apt/sources.list"
	: > "$tmp/root/etc/machine-id" # systemd makes one at the first boot, as on a new machine
	tar -C "$tmp/root" -c . | "${PODMAN[@]}" import --change 'CMD ["/sbin/init"]' - "$BASE" >/dev/null ||
		fail "podman import"
	rm -rf "$tmp"
	trap - EXIT
fi

trap cleanup EXIT
step "boot $BASE as $NAME (systemd as PID 1); log: $LOG"
cache=()
[ -z "${APT_CACHE:-}" ] || cache=(-v "$APT_CACHE:/var/cache/apt/archives:O")
"${PODMAN[@]}" run -d --name "$NAME" --hostname fps-deb12 --systemd=always --privileged \
	--network slirp4netns --pids-limit -1 \
	--shm-size "$(($(awk '/^MemTotal:/ { print $2 }' /proc/meminfo) / 2))k" \
	-v "$NAME-containers:/var/lib/containers" "${cache[@]}" "$BASE" >/dev/null || fail "podman run"
# systemd's bus comes up a moment after PID 1 starts: until then systemctl cannot ask.
for _ in $(seq 120); do
	state=$(in_box 'systemctl is-system-running --wait' 2>&1) && break
	case $state in degraded | maintenance | stopping) break ;; esac
	sleep 0.5
done
[ "$(in_box 'cat /proc/1/comm')" = systemd ] || fail "PID 1 is not systemd"
step "systemd: $state $(in_box 'systemctl --failed --no-legend --plain | cut -d" " -f1 | tr "\n" " "')"

step "the checkout: git archive of $(git -C "$ROOT" rev-parse --short HEAD) (+ uncommitted tracked changes) in /root/fps"
rev=$(git -C "$ROOT" stash create 2>/dev/null)
git -C "$ROOT" archive --prefix=fps/ "${rev:-HEAD}" | "${PODMAN[@]}" exec -i "$NAME" tar -x -C /root || fail "copy"

step "apt-get update && apt-get install make (README: a minimal Debian has no make)"
in_box 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq make' >> "$LOG" 2>&1 ||
	fail "apt-get install make"

step "cd /root/fps && make $TARGETS"
t1=$(date +%s)
in_box "cd /root/fps && make $TARGETS" >> "$LOG" 2>&1
rc=$?
step "make $TARGETS: exit $rc after $(($(date +%s) - t1)) s; summaries:"
grep -E '^(=+ )?[0-9]+ (passed|failed|error)|^\[  (PASSED|FAILED)  \]|^FAILED |^ERROR |make test: all suites passed' "$LOG" |
	tee -a "$LOG.summary"
[ "$rc" = 0 ] || fail "make $TARGETS (exit $rc): $LOG"

step "after make $TARGETS: no package's server runs or is enabled, nothing listens"
in_box 'for u in squid prometheus podman.socket avahi-daemon; do
	printf "%s: %s, %s\n" "$u" "$(systemctl is-enabled $u 2>&1)" "$(systemctl is-active $u 2>&1)"; done
	echo "listening:"; ss -ltnupH' | tee -a "$LOG"
[ -z "$(in_box 'ss -ltnupH')" ] || fail "a server listens after make $TARGETS"
in_box 'systemctl is-active -q squid || systemctl is-active -q prometheus' && fail "a package's server runs"

case " $TARGETS " in *" test "* | *" all "*) ;; *) step "done (no make run check without a build)"; exit 0 ;; esac
step "make run (in the background), then its printed curl commands"
in_box 'cd /root/fps && setsid bash -c "echo \$\$ > /root/make-run.pid; exec make run" > /root/make-run.log 2>&1 < /dev/null &'
ok=""
for _ in $(seq 240); do
	in_box 'curl -s --max-time 2 127.0.0.1:8079/status | python3 -c "import json,sys; sys.exit(not json.load(sys.stdin)[\"squid_runs_active\"])"' \
		2>/dev/null && { ok=1; break; }
	sleep 0.5
done
in_box 'cat /root/make-run.log' >> "$LOG"
[ -n "$ok" ] || fail "make run: not serving within 120 s"
bad=0
while IFS= read -r line; do
	want=$(sed -n 's/.*# *\([0-9]\{3\}\).*/\1/p' <<< "$line")
	got=$(in_box "${line%%#*} -s -o /dev/null -w '%{http_code}' --max-time 10")
	echo "$want -> $got: ${line%%#*}" | tee -a "$LOG"
	[ "$got" = "$want" ] || bad=1
done < <(in_box 'cat /root/make-run.log' | sed -n 's/^ *\(curl -x .*\)/\1/p')
in_box '/root/fps/build/fps-controller diagnose' >> "$LOG" 2>&1 || bad=1
step "diagnose without flags: $(tail -1 "$LOG")"
in_box 'kill -TERM -- -$(cat /root/make-run.pid)'
[ "$bad" = 0 ] || fail "make run's printed commands or diagnose"
step "passed: make $TARGETS, then make run, on a fresh Debian 12 booting systemd ($(($(date +%s) - t0)) s in all)"
