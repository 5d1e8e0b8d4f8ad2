"""One verdict at a time (docs/configuration.md): within one FPS instance, once any agent has been
answered under generation N, no agent whose request starts afterwards is answered under an older
one, with several busy agents, every fps-acl process busy, and one or two Squid workers.

Six agents ask, back to back on fresh connections, for two hosts while twelve edits flip which
of the two is whitelisted. A flap is an answer with a host's old verdict to a request that
started after another request had completed with that host's new verdict, before the next
edit. (A request already in flight when the first new verdict came back may have been decided
before: only requests that started afterwards count.)"""
import threading
import time

import pytest

from fpsharness import World, fresh_request, wait_for

HOSTS = ("a.flap.test", "b.flap.test")
EDITS = 12
AGENTS = 6


class Agents:
    def __init__(self, proxy_port, origin_port):
        self.args = (proxy_port, origin_port)
        self.stop_evt = threading.Event()
        self.lock = threading.Lock()
        self.records = []  # (t_start, t_end, host, status)
        self.threads = [threading.Thread(target=self.run, args=(i,), daemon=True) for i in range(AGENTS)]

    def run(self, i):
        n = i
        while not self.stop_evt.is_set():
            host = HOSTS[n % 2]
            n += 1
            t0 = time.monotonic()
            r = fresh_request(self.args[0], host, self.args[1])
            with self.lock:
                self.records.append((t0, time.monotonic(), host, r))

    def since(self, t):
        with self.lock:
            return [rec for rec in self.records if rec[1] >= t]

    def start(self):
        for t in self.threads:
            t.start()

    def finish(self):
        self.stop_evt.set()
        for t in self.threads:
            t.join(15)


def expected(k, host):
    """Verdict for host after edit k (edit 0 = the start): a.flap.test in odd edits, b in even."""
    a_in = k % 2 == 1
    return "200" if (host == HOSTS[0]) == a_in else "403"


def whitelist(w, k):
    return {"version": k, "domains": [h for h in HOSTS if expected(k, h) == "200"]}


def flaps(records, swaps):
    """Counts old verdicts after a new one was seen (see the module's docstring)."""
    out = []
    for k in range(1, len(swaps)):
        t_swap, t_next = swaps[k], swaps[k + 1] if k + 1 < len(swaps) else float("inf")
        for host in HOSTS:
            new, old = expected(k, host), expected(k - 1, host)
            firsts = [e for s, e, h, r in records if h == host and r == new and t_swap <= e and s < t_next]
            if not firsts:
                continue
            t_first = min(firsts)
            out += [(k, host, s - t_first) for s, e, h, r in records
                    if h == host and r == old and t_first < s < t_next]
    return out


@pytest.mark.parametrize("apply,workers", [("live", 1), ("live", 2), ("reconfigure", 1)])
def test_no_agent_goes_back_to_an_older_list(apply, workers):
    w = World(f"verdict-{apply}-{workers}")
    agents = None
    try:
        w.set_hosts({h: "127.0.0.1" for h in HOSTS})
        o = w.origin()
        yaml = w.yaml(apply=apply).replace("proxy:\n", f"proxy:\n  workers: {workers}\n", 1)
        w.write_config(yaml, whitelist(w, 0))
        w.start()
        for h in HOSTS:
            w.wait_status(h, int(expected(0, h)), timeout=30)
        agents = Agents(w.port, o.port)
        agents.start()
        swaps = [time.monotonic()]
        for k in range(1, EDITS + 1):
            swaps.append(time.monotonic())
            w.write_config(yaml, whitelist(w, k))
            seen = {}

            def applied():
                for s, e, h, r in agents.since(swaps[k]):
                    if r == expected(k, h) and s >= swaps[k]:
                        seen.setdefault(h, e)
                return len(seen) == len(HOSTS)
            wait_for(applied, 30, what=f"edit {k} seen for both hosts")
            # Settle by work done, not by time: every agent completes a few more requests.
            t_both = max(seen.values())
            wait_for(lambda: len([r for r in agents.since(t_both) if r[0] >= t_both]) >= 8 * AGENTS, 30,
                     what=f"requests after edit {k}")
        agents.finish()
        records = list(agents.records)
        bad = flaps(records, swaps)
        answered = sum(1 for r in records if r[3] in ("200", "403"))
        assert answered > EDITS * 8 * AGENTS
        assert not bad, f"{len(bad)} answers went back to an older list (edit, host, s after the first " \
                        f"new verdict): {bad[:10]}"
        if apply == "live":  # a reconfigure refuses connections for a moment (docs/squid-facts.md)
            other = {r[3] for r in records} - {"200", "403"}
            assert not other, other
    finally:
        if agents:
            agents.finish()
        w.close()
