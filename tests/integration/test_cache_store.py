"""The update cache's disk side (docs/operations.md "The update cache"): the workers share one
cache, the stores survive a corrupt or half-written state, a small volume bounds the store and
a full one does not stop Squid, and a change of the stores is applied the way it must be
(a new store needs a new Squid, a new size a reconfigure). Real Squid on loopback."""
import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from cacheharness import package, storm
from fpsharness import wait_for
from test_admin import status_json
from test_cache import HOST, auth_header, creds, curl_get, fresh, make_world, url


def start(w, env=None):
    w.start(extra_args=["--admin", f"127.0.0.1:{w.admin_port}"], env_extra=env)


def kept(w, path, size):
    """Fetches path twice; True when the second came from the cache (one origin fetch)."""
    body, _ = package(path.split("?")[0], size)
    for _ in range(2):
        status, _, got = curl_get(w, path)
        assert status == 200 and got == body
    return w.co.hits(path.split("?")[0]) == 1


def test_smp_workers_share_one_cache():
    # several workers: the memory cache only (docs/operations.md), shared by the workers
    w = make_world("cache-smp", workers=2, extra="cache:\n  memory_mb: 128\n  disk_mb: 0\n  max_object_mb: 64\n")
    try:
        start(w)
        conf = w.active_conf()
        assert "workers 2" in conf and "cache_mem 128 MB" in conf and "cache_dir" not in conf
        # no store adds disker processes: the coordinator is still process workers + 1
        assert "if ${process_number} = 3" in conf
        size = 2 << 20
        path = fresh(size=size, pace="0.004")
        _, sha = package(path.split("?")[0], size)
        results = storm(w.port, url(w, path), 100, headers=auth_header(w))
        assert all(not isinstance(r, Exception) and r[0] == 200 and r[2] == sha for r in results)
        assert w.co.bytes_for(path.split("?")[0]) / size <= 1.05
        # later agents on new connections (the kernel spreads them over both workers): hits
        for _ in range(10):
            status, _, body = curl_get(w, path)
            assert status == 200 and len(body) == size
        assert w.co.bytes_for(path.split("?")[0]) / size <= 1.05
    finally:
        w.close()


def test_a_disk_store_with_several_workers_is_refused():
    w = make_world("cache-smp-disk", workers=2, extra="cache:\n  disk_mb: 256\n")
    try:
        w.start(wait=False, extra_args=["--admin", f"127.0.0.1:{w.admin_port}"])
        wait_for(lambda: w.proc.poll() is not None, 30, what="the controller to refuse the config")
        assert w.proc.returncode == 1 and "cache.disk_mb 256 needs proxy.workers: 1" in w.log()
    finally:
        w.close()


def corrupt_store(store):
    """Garbage over the store's journal and over every object file, and one directory gone."""
    for p in store.rglob("*"):
        if p.is_file():
            p.write_bytes(os.urandom(max(64, p.stat().st_size // 2)))
    subprocess.run(["rm", "-rf", str(store / "0F")], check=True)


def test_corrupt_store_at_start_squid_serves():
    w = make_world("cache-corrupt")
    try:
        start(w)
        path = fresh(size=300000)
        assert kept(w, path, 300000)
        wait_for(lambda: any(p.is_file() and p.stat().st_size > 200000 for p in (w.state / "cache" / "1").rglob("*")),
                 15, what="the object written to disk")
        w.stop()
        corrupt_store(w.state / "cache" / "1")
        start(w)
        pid = w.squid_pid()
        body, _ = package(path.split("?")[0], 300000)
        status, _, got = curl_get(w, path)
        assert status == 200 and got == body  # from the origin again if it must, never garbage
        other = fresh(size=5000)
        assert kept(w, other, 5000)  # and it keeps new objects
        assert w.squid_pid() == pid  # served by the Squid that started on the corrupt store: no crash, no restart
    finally:
        w.close()


def test_half_written_store_after_a_kill():
    w = make_world("cache-kill")
    try:
        start(w)
        size = 4 << 20
        path = fresh(size=size, pace="0.02")  # about 1.3 s of download
        proc = subprocess.Popen(["curl", "-s", "-o", "/dev/null", "-x", w.proxy, "--proxy-user",
                                 ":".join(creds(w)), url(w, path)])
        try:
            wait_for(lambda: w.co.bytes_for(path.split("?")[0]) > size // 4, 15, what="download under way")
            old = w.squid_pid()
            os.kill(old, signal.SIGKILL)
            wait_for(lambda: w.squid_pid() not in (None, old) and curl_get(w, fresh(size=10))[0] == 200, 30,
                     what="squid restarted and serving")
        finally:
            proc.kill()
            proc.wait()
        body, _ = package(path.split("?")[0], size)
        status, _, got = curl_get(w, path)
        assert status == 200 and got == body
    finally:
        w.close()


def test_store_changes_restart_or_reconfigure_squid():
    w = make_world("cache-change", extra="cache:\n  memory_mb: 64\n")
    try:
        start(w)
        assert "cache_dir" not in w.active_conf() and not (w.state / "cache").exists()
        pid = w.squid_pid()
        y = (w.config / "fps.yaml").read_text()
        w.write_config(y.replace("  memory_mb: 64\n", "  memory_mb: 64\n  disk_mb: 128\n"),
                       {"version": 2, "domains": [HOST]})
        wait_for(lambda: "cache_dir aufs" in w.active_conf(), 20, what="the new generation")
        wait_for(lambda: w.squid_pid() not in (None, pid) and curl_get(w, fresh(size=10))[0] == 200, 30,
                 what="squid restarted for the new store")
        assert "restarting squid" in w.log()
        assert (w.state / "cache" / "1" / "0F" / "FF").is_dir()
        path = fresh(size=100000)
        assert kept(w, path, 100000)
        # a new size is a reconfigure: same Squid, and what it kept stays kept
        pid = w.squid_pid()
        y = (w.config / "fps.yaml").read_text()
        w.write_config(y.replace("disk_mb: 128", "disk_mb: 160"), {"version": 3, "domains": [HOST]})
        wait_for(lambda: " 160 16 256" in w.active_conf(), 20, what="the resized store")
        wait_for(lambda: "squid accepting again" in w.log(), 20, what="the reconfigure")
        assert w.squid_pid() == pid
        assert curl_get(w, path)[0] == 200 and w.co.hits(path.split("?")[0]) == 1
        assert status_json(w.admin_port)["cache"]["disk_mb"] == 160
    finally:
        w.close()


@pytest.fixture
def tmpfs_world():
    w = make_world("cache-tmpfs", extra="cache:\n  memory_mb: 32\n  disk_mb: 400\n  max_object_mb: 8\n")
    w.state.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=96m,mode=0755", "tmpfs", str(w.state)], check=True)
    try:
        yield w
    finally:
        try:
            w.close()  # its rmtree cannot remove the mount point: the world's directory stays
        finally:
            subprocess.run(["umount", "-l", str(w.state)], check=False)
            shutil.rmtree(w.dir, ignore_errors=True)


def test_small_tmpfs_volume_bounds_the_store_and_a_full_one_does_not_stop_squid(tmpfs_world):
    w = tmpfs_world
    env = {"FPS_LOG_ROTATE_BYTES": str(1 << 20)}  # reserve: 4 MiB of logs + 64 MiB
    # too large for the volume: refused, naming the key, the volume's size and what is free
    w.start(wait=False, extra_args=["--admin", f"127.0.0.1:{w.admin_port}"], env_extra=env)
    wait_for(lambda: w.proc.poll() is not None, 30, what="the controller to refuse the config")
    assert w.proc.returncode == 1
    assert "cache.disk_mb 400 does not fit the state volume: 96 MB in all" in w.log()
    w.stop()
    y = (w.config / "fps.yaml").read_text().replace("disk_mb: 400", "disk_mb: 20")
    w.write_config(y, {"version": 2, "domains": [HOST]})
    start(w, env)
    pid = w.squid_pid()
    # 12 objects of 4 MiB (48 MiB) through a 20 MiB store: Squid evicts, every agent gets its bytes
    for i in range(12):
        size = 4 << 20
        path = fresh(size=size)
        body, _ = package(path.split("?")[0], size)
        status, _, got = curl_get(w, path)
        assert status == 200 and got == body, i
    assert w.squid_pid() == pid
    # the volume fills anyway (something else wrote to it): Squid relays without keeping
    filler = Path(w.state) / "filler"
    subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=1M", "count=200"], capture_output=True)
    try:
        # the controller notices and leaves the disk store out (a restart of Squid)
        wait_for(lambda: status_json(w.admin_port)["cache"]["disk_suspended"], 20, what="disk store suspended")
        wait_for(lambda: "cache_dir" not in w.active_conf() and curl_get(w, fresh(size=10))[0] == 200, 30,
                 what="squid serving without the disk store")
        pid = w.squid_pid()
        for i in range(4):
            size = 3 << 20
            path = fresh(size=size)
            body, _ = package(path.split("?")[0], size)
            status, _, got = curl_get(w, path)
            assert status == 200 and got == body, i
        assert w.squid_pid() == pid
    finally:
        filler.unlink()
    wait_for(lambda: not status_json(w.admin_port)["cache"]["disk_suspended"], 20, what="disk store back")
    wait_for(lambda: "cache_dir aufs" in w.active_conf() and curl_get(w, fresh(size=10))[0] == 200, 30,
             what="squid serving with the disk store")
    assert "assertion failed" not in (w.state / "run" / "cache.log").read_text(errors="replace")
    pid = w.squid_pid()
    path = fresh(size=5000)
    assert kept(w, path, 5000)
    assert w.squid_pid() == pid


def test_unwritable_store_directory_is_repaired_at_start():
    w = make_world("cache-perm")
    try:
        start(w)
        assert kept(w, fresh(size=5000), 5000)
        w.stop()
        store = w.state / "cache" / "1"
        os.chown(store, 0, 0)
        os.chmod(store, 0)
        start(w)
        path = fresh(size=5000)
        assert kept(w, path, 5000)
        assert (store.stat().st_mode & 0o700) == 0o700
    finally:
        w.close()


def test_memory_mb_above_the_memory_limit_is_refused_and_the_last_good_config_serves():
    w = make_world("cache-mem", extra="cache:\n  memory_mb: 64\n")
    try:
        start(w, {"FPS_MEMORY_LIMIT_BYTES": str(600 << 20)})  # 64 + 128 + 96 fits
        pid = w.squid_pid()
        y = (w.config / "fps.yaml").read_text()
        w.write_config(y.replace("memory_mb: 64", "memory_mb: 512"), {"version": 2, "domains": [HOST]})
        err = wait_for(lambda: (status_json(w.admin_port)["last_reload"] or {}).get("error"), 20,
                       what="the reload error")
        assert "cache.memory_mb 512 does not fit the container's memory limit of 600 MB" in err
        assert status_json(w.admin_port)["cache"]["memory_mb"] == 64
        assert w.squid_pid() == pid and kept(w, fresh(size=1000), 1000)
    finally:
        w.close()
