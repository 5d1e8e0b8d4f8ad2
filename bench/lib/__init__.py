"""Helpers for bench/run_bench.py and bench/edit_latency.py (the FPS benchmark)."""
