#!/usr/bin/env bash
# `make image`: builds deploy/Dockerfile with Debian's podman, without a registry.
#   1. The base image: if $BASE_IMAGE is not in local storage, `debootstrap --variant=minbase
#      bookworm` from the Debian mirror this machine's apt uses, imported as $BASE_IMAGE.
#   2. `podman build --pull=never --network host` of deploy/Dockerfile with DEBIAN_IMAGE=$BASE_IMAGE,
#      in Docker's image format (OCI's drops the HEALTHCHECK).
# Podman reads deploy/image/containers.conf (CONTAINERS_CONF): no rlimits (they cannot be set in
# every sandbox), and the runc runtime (crun refuses a hybrid cgroup layout).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
IMAGE=${IMAGE:-localhost/fps:$(cat "$ROOT/VERSION")}
BASE_IMAGE=${BASE_IMAGE:-localhost/debian:12-slim}
export CONTAINERS_CONF=${CONTAINERS_CONF:-$ROOT/deploy/image/containers.conf}
PODMAN=(podman --runtime runc)

# debian_mirror: the Debian archive apt uses here.
# shellcheck source=deploy/image/debian-mirror.sh
. "$ROOT/deploy/image/debian-mirror.sh"

if ! "${PODMAN[@]}" image exists "$BASE_IMAGE"; then
	MIRROR=${DEBIAN_MIRROR:-$(debian_mirror)}
	tmp=$(mktemp -d /var/tmp/fps-rootfs.XXXXXX)
	trap 'rm -rf "$tmp"' EXIT
	echo "base image: debootstrap --variant=minbase bookworm from $MIRROR"
	debootstrap --variant=minbase bookworm "$tmp/root" "$MIRROR" > "$tmp/debootstrap.log" 2>&1 ||
		{ tail -20 "$tmp/debootstrap.log"; exit 1; }
	# What debian:12-slim trims, for this image and for every package installed on top of it:
	# documentation (copyrights kept), man pages, translations, apt lists and caches.
	cat > "$tmp/root/etc/dpkg/dpkg.cfg.d/slim" <<'SLIM'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/locale/*
SLIM
	find "$tmp/root/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
	rm -rf "$tmp"/root/usr/share/{man,groff,info,lintian,locale}/* \
		"$tmp"/root/var/lib/apt/lists/* "$tmp"/root/var/cache/apt/*.bin "$tmp"/root/var/log/*.log
	# Some postinst scripts (openjdk's update-alternatives) fail without this directory.
	mkdir -p "$tmp/root/usr/share/man/man1"
	tar -C "$tmp/root" -c . | "${PODMAN[@]}" import --change 'CMD ["/bin/bash"]' - "$BASE_IMAGE"
	rm -rf "$tmp"
	trap - EXIT
fi

"${PODMAN[@]}" build --format docker --pull=never --network host --build-arg DEBIAN_IMAGE="$BASE_IMAGE" \
	--ignorefile "$ROOT/deploy/Dockerfile.dockerignore" -f "$ROOT/deploy/Dockerfile" -t "$IMAGE" "$ROOT"
echo "$IMAGE: $(("$("${PODMAN[@]}" image inspect --format '{{.Size}}' "$IMAGE")" / 1000000)) MB"
