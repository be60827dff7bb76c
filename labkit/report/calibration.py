"""A calibration in words: the device constants `labkit calibrate` measured (`labkit.engine.calibrate`), as the
doctor, the command line and lesson 03 print them. Reads the constants' JSON form only."""
from __future__ import annotations


def format_calibration(c: dict | None) -> str:
    """Lines for the doctor: the constants and where they came from; or how to get them."""
    if not c:
        return "  time constants: none calibrated on this device — `labkit calibrate` measures them (a few seconds)"
    o = c["overhead_s_per_op"]
    flops = ", ".join(f"{p} {v / 1e9:,.1f} GFLOP/s" for p, v in c["flops_per_s"].items())
    attention = ", ".join(f"{p} {v['forward'] / 1e9:,.1f} forward, {v['backward'] / 1e9:,.1f} backward"
                          for p, v in (c.get("attention_flops_per_s") or {}).items())
    dequantize = max((r for _, r in c.get("dequantize_elements_per_s_by_size") or []), default=None)
    lines = [
        f"  time constants ({c['source']}; torch {c['versions'].get('torch')}"
        + (f", {c['threads']} thread{'s' if c['threads'] != 1 else ''}" if c.get("threads") else "") + "):",
        f"    F, matmul peak: {flops}" + (f"; attention: {attention}" if attention else ""),
        f"    B, copy peak: {c['bytes_per_s'] / 1e9:,.1f} GB/s"
        + (f"; NF4 dequantise {dequantize / 1e6:,.0f} M elements/s" if dequantize else "")
        + (f"; dropout masks {c['random_elements_per_s'] / 1e6:,.0f} M elements/s"
           if c.get("random_elements_per_s") else ""),
        "    o, per dispatched op: " + ", ".join(f"{k} {v * 1e6:,.1f} µs" for k, v in o.items()),
    ]
    return "\n".join(lines)
