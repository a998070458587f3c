"""Process-tree accounting from /proc: CPU time and memory of a process and all descendants."""

from __future__ import annotations

import os
from pathlib import Path

_CLK_TCK = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # comm may contain spaces and parentheses: split after the last ')'
    return raw[raw.rindex(")") + 2 :].split()


def start_time(pid: int) -> int | None:
    """Start time of `pid` in clock ticks since boot (None if it is gone): identifies a process."""
    fields = _stat_fields(pid)
    return int(fields[19]) if fields is not None else None  # stat field 22


def tree(root: int) -> list[int]:
    """`root` and every live descendant (scans /proc for parent links)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat_fields(int(entry))
        if fields is not None:
            children.setdefault(int(fields[1]), []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def cpu_seconds(root: int) -> float:
    """CPU seconds of the tree under `root`: utime+stime of every live process (all threads)
    plus cutime+cstime (descendants that already exited and were reaped, e.g. a restarted
    worker)."""
    ticks = 0
    for pid in tree(root):
        fields = _stat_fields(pid)
        if fields is not None:
            ticks += sum(int(x) for x in fields[11:15])  # stat fields 14-17
    return ticks / _CLK_TCK


def memory_kib(root: int) -> dict[str, int]:
    """Sum of Pss and Rss (KiB) over the tree, from smaps_rollup (status VmRSS as fallback)."""
    pss = rss = 0
    for pid in tree(root):
        try:
            text = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except OSError:
            text = ""
        got = False
        for line in text.splitlines():
            key, _, rest = line.partition(":")
            if key in ("Pss", "Rss"):
                value = int(rest.split()[0])
                if key == "Pss":
                    pss += value
                else:
                    rss += value
                got = True
        if not got:
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        rss += int(line.split()[1])
                        pss += int(line.split()[1])
            except OSError:
                pass
    return {"pss": pss, "rss": rss}


def host_cpu_seconds() -> tuple[float, float, float]:
    """(process, interrupt, idle) CPU seconds of the host since boot, all CPUs (/proc/stat).

    process = user+nice+system (what per-process utime/stime add up to); interrupt =
    irq+softirq+steal (loopback TCP work lands partly here, charged to no process).
    """
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:9]]
    user, nice, system, idle, iowait, irq, softirq, steal = fields
    return (
        (user + nice + system) / _CLK_TCK,
        (irq + softirq + steal) / _CLK_TCK,
        (idle + iowait) / _CLK_TCK,
    )
