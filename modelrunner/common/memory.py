"""The memory this process may still allocate: its cgroup's limit less what the cgroup uses (v2 or v1,
the tightest of the cgroup and its ancestors), and never more than the host's MemAvailable.

In a container the host's MemAvailable is the wrong number: a Runner budgeting by it loads a model
the container's limit cannot hold and the kernel OOM-kills it. Reclaimable page cache
(`inactive_file`) does not count as used, as for the kubelet's working set.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC = Path("/proc")
UNLIMITED = 1 << 62  # cgroup v1 writes "no limit" as a huge page-aligned number (LONG_MAX rounded down)

# Per cgroup version: the limit file, the usage file, and memory.stat's reclaimable page cache key.
_V2 = ("memory.max", "memory.current", "inactive_file")
_V1 = ("memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file")


def available_memory(cgroup_root: Path = CGROUP_ROOT, proc: Path = PROC) -> int:
    """Bytes still available to this process: min(cgroup headroom, MemAvailable); 0 when neither is known."""
    known = [n for n in (cgroup_headroom(cgroup_root, proc), mem_available(proc)) if n is not None]
    return max(0, min(known)) if known else 0


def mem_available(proc: Path = PROC) -> int | None:
    """MemAvailable from /proc/meminfo, in bytes."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in (proc / "meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return None


def cgroup_headroom(cgroup_root: Path = CGROUP_ROOT, proc: Path = PROC) -> int | None:
    """The least limit-minus-usage over this process's memory cgroup and its ancestors; None if unlimited."""
    headrooms = [h for d, files in _cgroup_dirs(cgroup_root, proc) if (h := _headroom(d, files)) is not None]
    return min(headrooms) if headrooms else None


def _cgroup_dirs(root: Path, proc: Path) -> list[tuple[Path, tuple[str, str, str]]]:
    """The memory cgroup directories of this process, leaf first, from /proc/self/cgroup."""
    try:
        lines = (proc / "self" / "cgroup").read_text().splitlines()
    except OSError:
        return []
    out: list[tuple[Path, tuple[str, str, str]]] = []
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hierarchy, controllers, path = parts
        if hierarchy == "0" and not controllers:
            base = root if (root / "cgroup.controllers").exists() else root / "unified"  # unified, or hybrid
            out += [(d, _V2) for d in _ancestors(base, path)]
        elif "memory" in controllers.split(","):
            out += [(d, _V1) for d in _ancestors(root / "memory", path)]
    return out


def _ancestors(base: Path, path: str) -> list[Path]:
    """base/a/b, base/a, base: those that exist (inside a cgroup namespace only base may)."""
    parts = [p for p in path.strip("/").split("/") if p and p != ".."]
    chain = [base.joinpath(*parts[:i]) for i in range(len(parts), -1, -1)]
    return [d for d in chain if d.is_dir()]


def _headroom(directory: Path, files: tuple[str, str, str]) -> int | None:
    limit_file, usage_file, cache_key = files
    limit = _read_int(directory / limit_file)
    usage = _read_int(directory / usage_file)
    if limit is None or limit >= UNLIMITED or usage is None:
        return None
    return limit - max(0, usage - _stat(directory / "memory.stat", cache_key))


def _read_int(path: Path) -> int | None:
    """An integer file; None when absent, unreadable or "max" (v2's no limit)."""
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _stat(path: Path, key: str) -> int:
    with contextlib.suppress(OSError, ValueError):
        for line in path.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return int(value)
    return 0
