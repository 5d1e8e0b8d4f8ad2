"""Before/after figures for the faults of docs/operations.md ("Faults"), for any build:

    FPS_BIN_DIR=build/asan python3 tests/integration/faults_measure.py full|readyz|orphan

Run it from the tree whose templates go with the binaries (an older checkout measures the
"before"). Each prints one line of figures. Not a test: nothing is asserted."""
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from fpsharness import World, free_port, fresh_request, stop_group, wait_for  # noqa: E402


def world(name):
    w = World(name)
    w.set_hosts({"a.allowed.test": "127.0.0.1", "b.other.test": "127.0.0.1"})
    w.origin()
    w.admin_port = free_port()
    w.write_config(w.yaml(extra=f"admin:\n  bind: 127.0.0.1\n  port: {w.admin_port}\n"),
                   {"version": 1, "domains": ["a.allowed.test"]})
    return w


def readyz(w):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{w.admin_port}/readyz", timeout=3) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return 0


def requests_for(w, seconds):
    out, end = {}, time.monotonic() + seconds
    while time.monotonic() < end:
        r = fresh_request(w.port, "a.allowed.test", w.origins[0].port, timeout=2)
        out[r] = out.get(r, 0) + 1
    return out


def full():
    """Agent requests over 20 s with the state volume (a 2 MB tmpfs) full; then whether an
    edit applies once space returns, and how long it took."""
    w = world("measure-full")
    w.state.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m,mode=0755", "tmpfs", str(w.state)], check=True)
    try:
        w.start()
        with open(w.state / "filler", "wb") as f:
            try:
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
            except OSError:
                pass
        res = requests_for(w, 20)
        w.write_config(w.yaml(extra=f"admin:\n  bind: 127.0.0.1\n  port: {w.admin_port}\n"),
                       {"version": 2, "domains": ["a.allowed.test", "b.other.test"]})
        time.sleep(2)
        (w.state / "filler").unlink()
        t0 = time.monotonic()
        try:
            w.wait_status("b.other.test", 200, timeout=60)
            applied = f"{time.monotonic() - t0:.2f} s after space returned"
        except AssertionError:
            applied = "not within 60 s"
        failed = sum(n for k, n in res.items() if k != "200")
        print(f"full volume: {failed} of {sum(res.values())} agent requests failed {res}; edit applied {applied}")
        if "-v" in sys.argv:
            print("\n".join(ln for ln in w.log().splitlines() if "fps-controller" in ln))
    finally:
        w.stop()
        subprocess.run(["umount", "-l", str(w.state)])
        w.close()


def readyz_turn():
    """Seconds from SIGSTOP of Squid until /readyz is 503 (15 s at most), and from SIGCONT
    until it is 200 again."""
    w = world("measure-readyz")
    squid = None
    try:
        w.start()
        wait_for(lambda: readyz(w) == 200, 30)
        squid = w.squid_pid()
        os.kill(squid, signal.SIGSTOP)
        t0, samples, turned = time.monotonic(), [], None
        while time.monotonic() - t0 < 15 and turned is None:
            samples.append(readyz(w))
            if samples[-1] == 503:
                turned = time.monotonic() - t0
            time.sleep(0.25)
        os.kill(squid, signal.SIGCONT)
        t1 = time.monotonic()
        wait_for(lambda: readyz(w) == 200, 30)
        back = time.monotonic() - t1
        print(f"readyz: 503 after {'%.2f s' % turned if turned is not None else 'never (15 s)'} "
              f"({samples.count(200)} of {len(samples)} samples 200 while stopped); 200 again {back:.2f} s "
              "after SIGCONT")
    finally:
        if squid:
            try:
                os.kill(squid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        w.close()


def orphan():
    """kill -9 of the controller, a new one on the same state dir: Squid restarts of the new
    controller within 20 s, whether a squid.conf edit reaches the serving Squid, and the gap in
    service (longest run of failed requests) until the new controller's Squid serves,
    killing the orphan after 20 s if it is still there."""
    w = world("measure-orphan")
    try:
        w.start()
        wait_for(lambda: readyz(w) == 200, 30)
        orphan_pid = w.squid_pid()
        w.proc.send_signal(signal.SIGKILL)
        w.proc.wait()
        w.start(wait=False)
        fails, gap_start, gap, end = 0, None, 0.0, time.monotonic() + 20
        while time.monotonic() < end:
            ok = fresh_request(w.port, "a.allowed.test", w.origins[0].port, timeout=2) == "200"
            now = time.monotonic()
            if not ok:
                fails += 1
                gap_start = gap_start or now
                gap = max(gap, now - gap_start)
            else:
                gap_start = None
            time.sleep(0.01)
        restarts = w.log().count("died (")
        w.write_config(w.yaml(safe_ports=[80, 443], extra=f"admin:\n  bind: 127.0.0.1\n  port: {w.admin_port}\n"),
                       {"version": 2, "domains": ["a.allowed.test"]})
        try:
            w.wait_status("a.allowed.test", 403, timeout=20)
            edit = "reached the serving Squid"
        except AssertionError:
            edit = "did NOT reach the serving Squid within 20 s"
        alive = os.path.exists(f"/proc/{orphan_pid}/cmdline")
        gap_after_kill = None
        if alive:  # the before case: end the orphan and see how long agents wait
            os.kill(orphan_pid, signal.SIGKILL)
            t0 = time.monotonic()
            wait_for(lambda: fresh_request(w.port, "a.allowed.test", w.origins[0].port, timeout=1) == "200", 120)
            gap_after_kill = time.monotonic() - t0
        print(f"orphan: new controller's Squid died {restarts} times in 20 s; longest gap {gap:.2f} s "
              f"({fails} failed requests); squid.conf edit {edit}; orphan still running: {alive}"
              + (f"; after killing it, agents waited {gap_after_kill:.2f} s" if gap_after_kill is not None else ""))
    finally:
        for p in w.procs:
            stop_group(p)
        w.close()


if __name__ == "__main__":
    {"full": full, "readyz": readyz_turn, "orphan": orphan}[sys.argv[1]]()
