"""Shared plumbing: paths, agent credentials, ports, process groups, /proc accounting."""
import hashlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "build"
LOADGEN = BUILD / "bench" / "loadgen"
CLK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")

# fpsharness (tests/integration) is reused as a library: World = config dir updated the
# kubelet way, secrets, state dir, starting the controller.
sys.path.insert(0, str(ROOT / "tests" / "integration"))
import fpsharness  # noqa: E402

fpsharness.BIN = BUILD  # always the release binaries, whatever FPS_BIN_DIR says


def agent_user(i, product="ApexOne"):
    """Username of loadgen's agent i (bench/loadgen.c: uuid5(NAMESPACE_URL, "fps-loadgen:agent:<i>"))."""
    return f"{product}-{uuid.uuid5(uuid.NAMESPACE_URL, f'fps-loadgen:agent:{i}')}"


def agent_password(user, apikey):
    return hashlib.sha1((user + apikey).encode()).hexdigest()


def agent_creds(n, apikey, product="ApexOne"):
    out = []
    for i in range(n):
        u = agent_user(i, product)
        out.append((u, agent_password(u, apikey)))
    return out


free_port = fpsharness.free_port  # below the ephemeral range (see there)


def wait_port(port, proc=None, timeout=30, what="port", host="127.0.0.1"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} before listening on {port}")
        try:
            socket.create_connection((host, port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} not listening on {host}:{port} after {timeout}s")


def sh(*a, **kw):
    return subprocess.run(a, check=True, capture_output=True, text=True, **kw)


def max_fds():
    import resource
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    return 65536 if hard == resource.RLIM_INFINITY else min(hard, 65536)


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class Procs:
    """Every long-running process the bench starts: each in its own session (process
    group), so stopping it also stops what it started (Squid's helpers, run-cloud.sh's
    children, the controller's Squid and stunnel)."""

    def __init__(self, logdir):
        self.logdir = Path(logdir)
        self.procs = []  # (name, Popen)

    def spawn(self, name, argv, **kw):
        out = open(self.logdir / f"{name}.out", "ab")
        p = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             start_new_session=True, **kw)
        out.close()
        self.procs.append((name, p))
        return p

    def adopt(self, name, popen):
        self.procs.append((name, popen))

    def stop(self, p, grace=15.0):
        """SIGTERM to the leader (it stops its own children: the controller its Squid, Squid
        its helpers), then SIGTERM and SIGKILL to whatever of its process group is left."""
        try:
            pgid = os.getpgid(p.pid)
        except ProcessLookupError:
            pgid = None
        if p.poll() is None:
            try:
                p.send_signal(signal.SIGTERM)
                p.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                pass
        if pgid:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(pgid, sig)
                except (ProcessLookupError, PermissionError):
                    break
                deadline = time.monotonic() + 3
                while time.monotonic() < deadline and group_alive(pgid):
                    time.sleep(0.05)
        if p.poll() is None:
            p.kill()
            p.wait()
        self.procs = [(n, q) for n, q in self.procs if q is not p]

    def stop_all(self):
        for name, p in reversed(list(self.procs)):
            try:
                self.stop(p)
            except Exception as e:  # keep stopping the others
                log(f"stopping {name}: {e}")
        self.procs = []


def group_alive(pgid):
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                st = Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()
                if int(st[2]) == pgid and st[0] != "Z":
                    return True
            except (OSError, IndexError, ValueError):
                pass
    return False


# ---- /proc accounting ----------------------------------------------------------------------

def _stat(pid):
    s = Path(f"/proc/{pid}/stat").read_text()
    comm = s[s.index("(") + 1:s.rindex(")")]
    f = s.rsplit(")", 1)[1].split()
    # f[0]=state f[1]=ppid ... utime=f[11] stime=f[12] cutime=f[13] cstime=f[14] starttime=f[19]
    return comm, int(f[1]), int(f[11]) + int(f[12]), int(f[19]), int(f[13]) + int(f[14])


def proc_table():
    tab = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                tab[int(d)] = _stat(int(d))
            except (OSError, ValueError, IndexError):
                pass
    return tab


def descendants(tab, root):
    kids = {}
    for pid, (_, ppid, _, _, _) in tab.items():
        kids.setdefault(ppid, []).append(pid)
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        if p in tab:
            out.append(p)
        todo.extend(kids.get(p, []))
    return out


ROLE_BY_COMM = {
    "squid": "squid", "fps-acl": "fps-acl", "fps-auth": "fps-auth", "basic_ncsa_auth": "basic_ncsa_auth",
    "stunnel4": "stunnel", "stunnel": "stunnel", "nginx": "nginx", "tinyproxy": "tinyproxy",
    "fps-controller": "fps-controller",
}


def role_of(prefix, comm):
    r = ROLE_BY_COMM.get(comm)
    if r is None:
        if comm.startswith("basic_ncsa"):
            r = "basic_ncsa_auth"
        elif comm.startswith("stunnel"):
            r = "stunnel"
        else:
            return None  # shells, unshare, log daemons: not accounted
    return f"{prefix}{r}"


def snapshot(roots):
    """{(pid, starttime): (role, own_ticks, reaped_ticks, ppid)} for the process trees under
    roots ({prefix: pid}); own = utime+stime of all threads, reaped = cutime+cstime."""
    tab = proc_table()
    snap = {}
    for prefix, root in roots.items():
        if root is None:
            continue
        for pid in descendants(tab, root):
            comm, ppid, own, start, reaped = tab[pid]
            role = role_of(prefix, comm)
            if role:
                snap[(pid, start)] = (role, own, reaped, ppid)
    return snap


def others_snapshot(exclude):
    """{(pid, starttime): own + reaped ticks} of every user-space process not in exclude (pids):
    the other jobs on the box. Kernel threads (children of kthreadd, pid 2) are left out:
    ksoftirqd and the workers mostly carry the bench's own packets."""
    return {(pid, st[3]): st[2] + st[4] for pid, st in proc_table().items()
            if pid not in exclude and pid != 2 and st[1] != 2}


def others_delta(before, after):
    """CPU seconds the other jobs used between two others_snapshot()s; a process that ended
    gives back what it had at `before` (its parent reaped it, or it is gone uncounted)."""
    ticks = sum(v - before.get(k, 0) for k, v in after.items())
    ticks -= sum(v for k, v in before.items() if k not in after)
    return ticks / CLK


def cpu_delta(before, after):
    """CPU seconds per role between two snapshots, exact in total although Squid may re-spawn
    helpers meanwhile: a process that ended takes back what it had at `before`, and the CPU its
    parent reaped (cutime) goes to the role of the children that ended (else to the parent)."""
    out = {}
    gone_role = {}  # ppid -> role of its children that ended in the window
    for k, (role, own, reaped, ppid) in before.items():
        if k not in after:
            out[role] = out.get(role, 0) - own - reaped
            gone_role.setdefault(ppid, role)
    for k, (role, own, reaped, _) in after.items():
        b = before.get(k)
        out[role] = out.get(role, 0) + own - (b[1] if b else 0)
        dr = reaped - (b[2] if b else 0)
        if dr:
            r2 = gone_role.get(k[0], role)
            out[r2] = out.get(r2, 0) + dr
    return {r: round(v / CLK, 2) for r, v in sorted(out.items())}


def reset_peak_rss(snap):
    for (pid, _) in snap:
        try:
            with open(f"/proc/{pid}/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            pass


def peak_rss(snap):
    """Sum of VmHWM (MB) per role: peak since reset_peak_rss (processes of a role summed)."""
    out = {}
    for (pid, _), (role, *_rest) in snap.items():
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    out[role] = out.get(role, 0) + int(line.split()[1]) / 1024
        except OSError:
            pass
    return {r: round(v, 1) for r, v in sorted(out.items())}


def threads_of(snap, role_suffix):
    n = 0
    for (pid, _), (role, *_rest) in snap.items():
        if role.endswith(role_suffix):
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("Threads:"):
                        n += int(line.split()[1])
            except OSError:
                pass
    return n


def _cpu_line():
    return [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]


def box_busy():
    """Busy CPU seconds of the whole box so far (all cores) that processes account for: user,
    nice, system and steal from /proc/stat. Interrupt time (irq, softirq) is left out: this
    kernel accounts it to no process, and on loopback it is mostly the bench's own packets
    (CONNECT+TLS runs spend ~5 core-seconds of softirq per 10 s), so counting it as "other
    jobs" marked every CONNECT run disturbed. It is kept apart: box_irq()."""
    f = _cpu_line()
    return (f[0] + f[1] + f[2] + f[7]) / CLK


def box_irq():
    """Interrupt CPU seconds (irq + softirq) of the whole box so far."""
    f = _cpu_line()
    return (f[5] + f[6]) / CLK


def proc_ticks(pid):
    try:
        st = _stat(pid)
        return (st[2] + st[4]) / CLK
    except (OSError, ValueError, IndexError):
        return 0.0


def loadavg():
    return Path("/proc/loadavg").read_text().split()[0]


def smp_helpers(root):
    """{kid: {helper comm: count}} for the SMP kids of the process tree under root: Squid names
    its kids "(squid-1)", "(squid-2)", "(squid-coord-3)" in argv[0], and each kid starts its own
    helpers as its children (the master, kid "master", none with SMP)."""
    tab = proc_table()
    out = {}
    for pid in descendants(tab, root):
        comm, ppid, *_ = tab[pid]
        if comm == "squid" or ppid not in tab or tab[ppid][0] != "squid":
            continue
        try:
            parent = Path(f"/proc/{ppid}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
        except OSError:
            continue
        kid = parent.strip("()") if parent.startswith("(") else "master"
        d = out.setdefault(kid, {})
        d[comm] = d.get(comm, 0) + 1
    return dict(sorted(out.items()))
