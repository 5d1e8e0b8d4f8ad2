#!/usr/bin/python3
"""Measures how long a burst of wrong passwords for one agent's username keeps that agent's
correct password from working (docs/security.md, "Lockout").

    FPS_BIN_DIR=build PYTHONPATH=tests/integration bench/security/lockout.py [--burst 400] [--runs 5]

Starts one FPS (real Squid, fps-auth) with an origin, sends the burst (the wrong passwords on
parallel connections, as fast as they go), then sends the correct password on a fresh connection
every 10 ms and reports, per run: how long the burst took, how many correct-password requests
were refused (403/407) and the time from the end of the burst to the first 200."""
import argparse
import base64
import socket
import sys
import threading
import time

from fpsharness import World, agent_credentials, curl, wait_for


def status(port, host, oport, user, pw, timeout=10):
    tok = base64.b64encode(f"{user}:{pw}".encode()).decode()
    req = (f"GET http://{host}:{oport}/ HTTP/1.1\r\nHost: {host}:{oport}\r\n"
           f"Proxy-Authorization: Basic {tok}\r\nConnection: close\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(req)
        got = b""
        while b"\r\n" not in got:
            chunk = s.recv(4096)
            if not chunk:
                break
            got += chunk
    return got[9:12].decode() if got.startswith(b"HTTP/1.") else "none"


def burst(port, host, oport, user, n, threads=50):
    codes = []
    lock = threading.Lock()

    def worker(k):
        for i in range(k):
            c = status(port, host, oport, user, f"wrong-{threading.get_ident()}-{i}")
            with lock:
                codes.append(c)
    ts = [threading.Thread(target=worker, args=(n // threads + (1 if t < n % threads else 0),))
          for t in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return codes


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--burst", type=int, default=400)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--deadline", type=float, default=120.0)
    a = ap.parse_args()
    w = World("lockout")
    try:
        w.set_hosts({"a.allowed.test": "127.0.0.1"})
        o = w.origin()
        w.write_keys()
        w.write_config(w.yaml(auth=True), {"version": 1, "domains": ["a.allowed.test"]})
        w.start()
        user, pw = agent_credentials(w.API_KEY)
        wait_for(lambda: status(w.port, "a.allowed.test", o.port, user, pw) == "200", 30, what="first 200")
        for run in range(a.runs):
            # The agent keeps working during the burst: its correct password on a fresh
            # connection every 10 ms, before, during and after.
            seen, stop = [], threading.Event()

            def agent():
                while not stop.is_set():
                    seen.append((time.monotonic(), status(w.port, "a.allowed.test", o.port, user, pw)))
                    time.sleep(0.01)
            ag = threading.Thread(target=agent)
            ag.start()
            time.sleep(0.2)
            t0 = time.monotonic()
            codes = burst(w.port, "a.allowed.test", o.port, user, a.burst)
            t1 = time.monotonic()
            # Until the agent has had 20 answers in a row of 200 after the burst, or the deadline.
            def settled():
                after = [c for t, c in seen if t > t1]
                return len(after) >= 20 and all(c == "200" for c in after[-20:])
            while not settled() and time.monotonic() - t1 < a.deadline:
                time.sleep(0.05)
            stop.set()
            ag.join()
            bad = [(t, c) for t, c in seen if c != "200"]
            last_bad = max((t for t, c in bad), default=None)
            during = sum(1 for t, c in bad if t0 <= t <= t1)
            overlapped = sum(1 for t, c in seen if t0 <= t <= t1)
            after = sum(1 for t, c in bad if t > t1)
            print(f"run {run}: burst of {len(codes)} wrong passwords in {t1 - t0:.2f}s ({sorted(set(codes))}); "
                  f"agent's correct password: {len(seen)} requests ({overlapped} answered during the burst), "
                  f"refused {during} during the burst, "
                  f"{after} after it ({sorted(set(c for t, c in bad))}); lockout lasted "
                  f"{'%.2fs' % (last_bad - t0) if last_bad else '0s'} from the burst's start", flush=True)
    finally:
        w.close()


if __name__ == "__main__":
    sys.exit(main())
