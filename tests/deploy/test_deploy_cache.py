"""The update cache's sizing in the manifests (docs/operations.md "The update cache"): the state
emptyDir's sizeLimit, which statvfs cannot see, holds cache.disk_mb plus the reserve the
controller keeps for logs and generations; the memory limit of the container Squid runs in
holds cache.memory_mb plus what Squid and the helpers need (the controller's own rule)."""
import re

import pytest

from deploy_helpers import OVERLAYS, built, container, find, pod_spec, seed_config, WORKLOAD

LOG_ROTATE_MIB = 64            # ctl_internal.h LOG_ROTATE_BYTES
RESERVE_MIB = 4 * LOG_ROTATE_MIB + 64   # cache.h CACHE_VOLUME_RESERVE
MEMORY_BASE_MIB, PER_WORKER_MIB = 128, 96  # cache.h


def mib(q):
    m = re.fullmatch(r"(\d+)(Ki|Mi|Gi|Ti)?", str(q))
    assert m, q
    return int(m.group(1)) * {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024, "Ti": 1 << 20, None: 1 / (1 << 20)}[m.group(2)]


def test_seed_turns_the_cache_on():
    fps, _ = seed_config()
    c = fps["cache"]
    assert c["memory_mb"] > 0 and c["disk_mb"] > 0 and c["max_object_mb"] <= c["disk_mb"]
    assert fps["proxy"].get("workers", 1) == 1  # a disk store needs one worker


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_state_volume_holds_the_disk_store(overlay):
    fps, _ = seed_config()
    spec = pod_spec(find(built(overlay), *WORKLOAD))
    state = next(v for v in spec["volumes"] if v["name"] == "state")
    limit = mib(state["emptyDir"]["sizeLimit"])
    assert fps["cache"]["disk_mb"] + RESERVE_MIB <= limit, (fps["cache"], state)


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_squids_memory_limit_holds_the_memory_cache(overlay):
    fps, _ = seed_config()
    spec = pod_spec(find(built(overlay), *WORKLOAD))
    names = [c["name"] for c in spec["containers"]]
    squid = container(spec, "squid" if "squid" in names else "fps")
    limit = mib(squid["resources"]["limits"]["memory"])
    workers = fps["proxy"].get("workers", 1)
    assert fps["cache"]["memory_mb"] + MEMORY_BASE_MIB + PER_WORKER_MIB * workers <= limit, squid["resources"]
