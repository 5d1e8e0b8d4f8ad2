"""(15) the reports' price (lib/reportsprice.py): the verdict against the issue's 3% bound, the
table, and one short real pair (two FPS, reports on and off, real Squid and nginx on loopback)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lib import report, reportsprice, services  # noqa: E402


def _rec(rps_on, rps_off, cpu_on=200.0, cpu_off=200.0):
    runs = [dict(kind="get1k", pair=0, variant=v, rps=rps, cpu_us_per_answer=cpu, status={"200": int(rps * 5)},
                 other_cpu_s=0.1) for v, rps, cpu in (("on", rps_on, cpu_on), ("off", rps_off, cpu_off))]
    return {"runs": runs, "get1k": {"rps_on": rps_on, "rps_off": rps_off, "rps_ratio": rps_on / rps_off,
                                    "cpu_us_on": cpu_on, "cpu_us_off": cpu_off, "cpu_ratio": cpu_on / cpu_off,
                                    "pairs": 1}}


def test_the_bound_is_met_at_3_percent_and_missed_beyond():
    (name, ok, how), = reportsprice.checks(_rec(4850, 5000))
    assert ok is True and "0.970" in how and name.startswith("(15)")
    (_, ok, how), = reportsprice.checks(_rec(4800, 5000, cpu_on=210))
    assert ok is False and "0.960" in how and "1.050" in how
    assert reportsprice.checks(None) == [] and reportsprice.checks({"runs": []}) == []


def test_table_lists_every_run_and_the_medians():
    md = "\n".join(reportsprice.table(_rec(4900, 5000)))
    assert "### (15)" in md and "| get1k | 1 | on | 4,900 |" in md and "| get1k | 1 | off | 5,000 |" in md
    assert "on/off 0.980" in md
    assert reportsprice.table(None) == []


def test_the_bench_report_carries_the_row_and_its_target():
    res = {"meta": {"timestamp": "t", "mode": "quick", "agents": 2, "duration": 1, "warmup": 0, "reps": 1,
                    "workers": 1, "tunnel_rate": 1, "host": "h", "nproc": 2, "kernel": "k", "versions": "v",
                    "git": "g", "loadavg_start": "0"},
           "reports_price": _rec(4000, 5000), "targets": reportsprice.checks(_rec(4000, 5000))}
    md = report.markdown(res)
    assert "### (15)" in md
    assert "| (15) the failures and traffic reports cost <= 3% of GET 1 KiB throughput (vs reports off) | **MISSED** |" in md


def test_a_real_pair_measures_both_instances_and_only_the_shipped_one_logs_details():
    env = services.Env(cloud_netns=False)
    try:
        env.start_nginx()
        fps = reportsprice.start(env)  # raises unless only "on" has the detail log in squid.conf
        rec = reportsprice.measure(env, fps, ["get1k"], 1, agents=20, duration=1, warmup=0.2)
        by = {r["variant"]: r for r in rec["runs"]}
        assert set(by) == {"on", "off"}
        for r in by.values():
            assert set(r["status"]) == {"200"} and r["rps"] > 0 and r["cpu_us_per_answer"] > 0
        # Each instance's CPU is its own: the other's processes are not in its figure.
        assert any(k.startswith("fpsoff:") for k in by["off"]["cpu_s"])
        s = rec["get1k"]
        assert s["pairs"] == 1 and s["rps_ratio"] == by["on"]["rps"] / by["off"]["rps"]
    finally:
        env.close()
