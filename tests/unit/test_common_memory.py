"""The memory budget's source: cgroup v2 and v1 limits (fake trees in tmp dirs), MemAvailable otherwise."""

from __future__ import annotations

from pathlib import Path

from modelrunner.common.memory import available_memory, cgroup_headroom

GIB = 1 << 30


def proc_tree(tmp_path: Path, cgroup: str, mem_available_kib: int | None = 64 * GIB // 1024) -> Path:
    proc = tmp_path / "proc"
    (proc / "self").mkdir(parents=True)
    (proc / "self" / "cgroup").write_text(cgroup)
    if mem_available_kib is not None:
        (proc / "meminfo").write_text(f"MemTotal: 999 kB\nMemAvailable: {mem_available_kib} kB\n")
    return proc


def write(directory: Path, **files: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (directory / name.replace("_", ".", 1)).write_text(text)


def test_v2_limit_less_usage_without_page_cache(tmp_path: Path) -> None:
    root = tmp_path / "cg"
    write(root, cgroup_controllers="cpu memory")
    write(root / "kubepods" / "pod1", memory_max=f"{4 * GIB}\n", memory_current=f"{GIB}\n",
          memory_stat=f"anon 1\ninactive_file {GIB // 2}\n")
    proc = proc_tree(tmp_path, "0::/kubepods/pod1\n")
    assert cgroup_headroom(root, proc) == 4 * GIB - GIB // 2
    assert available_memory(root, proc) == 4 * GIB - GIB // 2  # tighter than the host's 64 GiB


def test_v2_unlimited_leaf_under_a_limited_parent(tmp_path: Path) -> None:
    root = tmp_path / "cg"
    write(root, cgroup_controllers="memory")
    write(root / "system" / "app", memory_max="max\n", memory_current=f"{GIB}\n")
    write(root / "system", memory_max=f"{2 * GIB}\n", memory_current=f"{GIB}\n")
    assert available_memory(root, proc_tree(tmp_path, "0::/system/app\n")) == GIB


def test_v2_inside_a_cgroup_namespace_reads_the_root(tmp_path: Path) -> None:
    """Docker with cgroupns: /proc/self/cgroup says "/" and the container's files are at the mount's root."""
    root = tmp_path / "cg"
    write(root, cgroup_controllers="memory", memory_max=f"{3 * GIB}\n", memory_current="0\n")
    assert available_memory(root, proc_tree(tmp_path, "0::/\n")) == 3 * GIB


def test_v1_limit_and_unlimited(tmp_path: Path) -> None:
    root = tmp_path / "cg"
    write(root / "memory" / "docker" / "abc", memory_limit_in_bytes=f"{8 * GIB}\n",
          memory_usage_in_bytes=f"{3 * GIB}\n", memory_stat=f"cache 5\ntotal_inactive_file {GIB}\n")
    write(root / "memory", memory_limit_in_bytes="9223372036854771712\n", memory_usage_in_bytes=f"{50 * GIB}\n")
    proc = proc_tree(tmp_path, "12:memory:/docker/abc\n0::/\n")
    assert available_memory(root, proc) == 8 * GIB - 2 * GIB


def test_no_cgroup_limit_falls_back_to_mem_available(tmp_path: Path) -> None:
    root = tmp_path / "cg"
    write(root / "memory", memory_limit_in_bytes="9223372036854771712\n", memory_usage_in_bytes="1\n")
    proc = proc_tree(tmp_path, "4:memory:/\n0::/\n", mem_available_kib=1024)
    assert cgroup_headroom(root, proc) is None
    assert available_memory(root, proc) == 1024 * 1024


def test_a_limit_above_the_host_memory_gives_the_host_memory(tmp_path: Path) -> None:
    root = tmp_path / "cg"
    write(root, cgroup_controllers="memory", memory_max=f"{100 * GIB}\n", memory_current="0\n")
    assert available_memory(root, proc_tree(tmp_path, "0::/\n", mem_available_kib=GIB // 1024)) == GIB


def test_nothing_readable_is_zero(tmp_path: Path) -> None:
    assert available_memory(tmp_path / "absent", tmp_path / "noproc") == 0
    garbage = proc_tree(tmp_path, "not a cgroup line\n", mem_available_kib=None)
    assert available_memory(tmp_path / "absent", garbage) == 0
