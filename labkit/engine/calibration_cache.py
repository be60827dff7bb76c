"""Where a calibration lives: the identity it belongs to (device, library versions, CPU threads), the cache file
keyed by it, and the reader that never trusts it blindly (`cached_calibration`, `calibration_problem`). What is
measured, and how, is `labkit.engine.calibration_probes` and `overhead_probe`, run by `labkit.engine.calibrate`."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import warnings
from importlib import metadata

import torch

from labkit.config import LabkitWarning, is_finite
from labkit.engine.models import cache_dir

VERSION = 1                                   # bump when what is measured changes: old cache files are not read
PACKAGES = ("torch", "transformers", "peft", "bitsandbytes")


def _versions() -> dict:
    out = {}
    for p in PACKAGES:
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            out[p] = None
    return out


def device_identity(device: str | None = None) -> dict:
    """What the constants belong to: the device's type and name, the library versions, (CPU) torch's threads, and
    whether the probes take a T4's precision path on a device that is not a T4 (a bigger GPU under the T4 profile,
    the CPU in the tests' T4 rehearsal): 'auto' is fp16 there, so the per-op probe and the 4-bit dequantization
    run in fp16, not in the device's own precision, and the two calibrations are kept apart."""
    from labkit.engine import hardware
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if dev.type == "cuda":
        name = torch.cuda.get_device_properties(dev.index or 0).name
        threads = None
        t4_path = hardware.t4_profile_active()
    else:
        name = hardware.device_facts("cpu", check_hub=False)["name"]
        threads = torch.get_num_threads()
        t4_path = hardware.t4_rehearsal_active()
    identity = {"type": dev.type, "name": name, "threads": threads, "versions": _versions(), "calibration": VERSION}
    if t4_path:                              # only then: the cache files of every other calibration keep their names
        identity["t4_path"] = True
    return identity


def cache_path(identity: dict) -> str:
    """cache_dir()/calibration/<device name>-<hash of the identity>.json"""
    tag = hashlib.sha1(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:10]
    slug = re.sub(r"[^A-Za-z0-9]+", "-", identity["name"] or identity["type"]).strip("-").lower()[:40]
    return os.path.join(cache_dir(), "calibration", f"{slug}-{tag}.json")


def cached_calibration(device: str | None = None) -> dict | None:
    """The cached constants for this device and these library versions, or None (never calibrated, or the
    device cannot be read: a report, never a failure). A cache file that is not whole constants (empty, cut short,
    strings or zeros where rates go) is never a reason to fail: it is said in one warning, set aside as
    `<file>.bad`, and the device reads as never calibrated, so the next `calibrate()` measures again."""
    try:
        path = cache_path(device_identity(device))
    except Exception:  # noqa: BLE001 — a device that cannot be read: no constants
        return None
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            found = json.loads(f.read(MAX_CACHE_BYTES + 1))
        problem = calibration_problem(found)
    except (OSError, ValueError, RecursionError) as e:
        problem = f"not readable JSON ({type(e).__name__})"
    if problem is None:
        return found
    with contextlib.suppress(OSError):
        os.replace(path, path + ".bad")
    warnings.warn(f"the calibration cache {path} is damaged ({problem}); set aside as {os.path.basename(path)}.bad "
                  "and ignored: `labkit calibrate` measures this device again", LabkitWarning, stacklevel=2)
    return None


MAX_CACHE_BYTES = 1 << 20     # a calibration is a few KiB; more is not one
_CURVES = ("bytes_per_s_by_size", "dequantize_elements_per_s_by_size")
_CURVES_PER_PRECISION = ("flops_per_s_by_size", "elementwise_bytes_per_s_by_size")


def calibration_problem(c) -> str | None:
    """What makes `c` not a calibration the theory can use, in a few words; None when it is one."""
    def rate(x) -> bool:
        return isinstance(x, (int, float)) and is_finite(x) and x > 0

    def curve(x) -> bool:
        return isinstance(x, list) and bool(x) and all(isinstance(p, list) and len(p) == 2 and rate(p[0])
                                                        and rate(p[1]) for p in x)

    if not isinstance(c, dict):
        return f"a {type(c).__name__}, not an object"
    for key in ("type", "name", "source"):
        if not isinstance(c.get(key), str):
            return f"no {key}"
    for key in ("flops_per_s", "overhead_s_per_op"):
        table = c.get(key)
        if not isinstance(table, dict) or not table or not all(rate(v) for v in table.values()):
            return f"{key} is not a table of numbers > 0"
    if not rate(c.get("bytes_per_s")):
        return "bytes_per_s is not a number > 0"
    # what older calibrations did not measure may be absent; present, it must be whole
    if c.get("random_elements_per_s") is not None and not rate(c["random_elements_per_s"]):
        return "random_elements_per_s is not a number > 0"
    for key in _CURVES:
        if c.get(key) is not None and not curve(c[key]):
            return f"{key} is not a list of [size, rate] pairs"
    for key in _CURVES_PER_PRECISION:
        table = c.get(key)
        if table is not None and (not isinstance(table, dict) or not all(curve(v) for v in table.values())):
            return f"{key} is not a table of [size, rate] lists"
    attention = c.get("attention_flops_per_s")
    if attention is not None and (not isinstance(attention, dict) or not all(
            isinstance(v, dict) and all(rate(x) for x in v.values()) for v in attention.values())):
        return "attention_flops_per_s is not a table of numbers > 0"
    return None
