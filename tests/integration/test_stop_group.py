"""Ctrl-C in `make run`'s terminal sends SIGINT to the whole foreground process group: the
controller and its Squid get it at once, and Squid 5.7 exits on it at once. The controller's
drain must see that its Squid is gone and stop, not wait out the 60 s it gives a reconfigure
to be accepted, for a Squid that is only a zombie no one has reaped yet (seen in
tests/systemd/run.sh's Debian 12: `make run` took 60 s to end after Ctrl-C)."""
import os
import signal

from fpsharness import World


def test_sigint_to_the_process_group_stops_without_waiting_for_a_dead_squid():
    w = World("stop-group")
    try:
        w.set_hosts({"a.allowed.test": "127.0.0.1"})
        w.origin()
        w.write_keys()
        w.write_config(w.yaml(), {"version": 1, "domains": ["a.allowed.test"]})
        w.start()
        assert w.get("a.allowed.test")[0] == 200
        os.killpg(w.proc.pid, signal.SIGINT)  # what the terminal does on Ctrl-C
        w.proc.wait(timeout=120)  # a bound for a broken build, not a measure
        log = w.log()
        assert "signal 2: shutting down" in log, log[-3000:]
        assert "did not accept connections within" not in log, log[-3000:]
        assert "stopped (generation" in log, log[-3000:]
    finally:
        w.close()
