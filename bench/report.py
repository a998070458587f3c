"""Markdown report of the proxy benchmark: medians, ranges, ratios against goals."""

from __future__ import annotations

import statistics
from dataclasses import dataclass

Results = dict[str, dict[str, list[dict]]]


@dataclass(frozen=True)
class Goal:
    """certwatch/HAProxy ratio of the medians of `metric` in `scenario` must be `op` `bound`."""

    scenario: str
    metric: str
    label: str
    op: str | None  # "≥", "≤" or None (reported, no goal)
    bound: float | None


def _values(results: Results, scenario: str, side: str, metric: str) -> list[float]:
    return [float(r[metric]) for r in results.get(scenario, {}).get(side, []) if metric in r]


def _fmt(x: float) -> str:
    if abs(x) >= 100:
        return f"{x:,.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


def cell(values: list[float]) -> str:
    """`median [min–max]` (or just the value for a single run)."""
    if not values:
        return "–"
    med = statistics.median(values)
    if len(values) == 1:
        return _fmt(med)
    return f"{_fmt(med)} [{_fmt(min(values))}–{_fmt(max(values))}]"


def goal_row(results: Results, g: Goal) -> str | None:
    """One table row, or None when the scenario was not run."""
    cw = _values(results, g.scenario, "certwatch", g.metric)
    hp = _values(results, g.scenario, "haproxy", g.metric)
    if not cw or not hp:
        return None
    ratio = statistics.median(cw) / statistics.median(hp) if statistics.median(hp) else 0.0
    if g.op is None or g.bound is None:
        goal, met = "–", "–"
    else:
        ok = ratio >= g.bound if g.op == "≥" else ratio <= g.bound
        goal, met = f"{g.op} {g.bound:g}×", "yes" if ok else "**no**"
    return f"| {g.label} | {cell(cw)} | {cell(hp)} | {ratio:.3f}× | {goal} | {met} |"


def _side_cell(results: Results, scenario: str, side: str, metric: str, unit: str) -> str:
    v = _values(results, scenario, side, metric)
    return f"{cell(v)} {unit}" if v else "–"


def _failures(results: Results, scenario: str, side: str) -> str:
    """Failed connections (+ stalled ones) and failed runs of one side, summed over runs."""
    runs = results.get(scenario, {}).get(side, [])
    failed = int(sum(float(r.get("failures", 0)) for r in runs))
    stalled = int(sum(float(r.get("stalled", 0)) for r in runs))
    errors = sum(1 for r in runs if "error" in r)
    resumed = int(sum(float(r.get("resumed", 0)) for r in runs))
    text = f"{failed}" + (f" (+{stalled} stalled)" if stalled else "")
    text += f", {resumed} RESUMED (not full handshakes)" if resumed else ""
    return text + (f", {errors} run(s) failed" if errors else "")


def render(
    env: dict[str, str], results: Results, goals: tuple[Goal, ...], titles: list[tuple[str, str]]
) -> str:
    """The whole report: environment, goal table, load-generator/proxy CPU table, method notes."""
    lines = ["# certwatch offload vs HAProxy", ""]
    lines += [f"- {k}: {v}" for k, v in env.items()]
    other = [
        float(r["other_cores"])
        for sides in results.values()
        for runs in sides.values()
        for r in runs
        if "other_cores" in r
    ]
    if other and max(other) > 0.25:
        lines += [
            "",
            f"**Warning:** other processes used up to {max(other):.2f} cores during the "
            'handshake runs (see "Host during the handshake runs"); connections/s and '
            "latency are unreliable; rerun on a quiet host.",
        ]
    lines += [
        "",
        "Cells: median [min–max] over the runs; ratio = certwatch median / HAProxy median.",
        "",
        "| metric | certwatch | HAProxy | ratio | goal | met? |",
        "|---|---|---|---|---|---|",
    ]
    lines += [row for g in goals if (row := goal_row(results, g)) is not None]
    lines += [
        "",
        "## Load generator and proxy CPU per scenario",
        "",
        "| scenario | loadgen CPU, certwatch run | loadgen CPU, HAProxy run "
        "| proxy CPU, certwatch | proxy CPU, HAProxy | failed conns cw / HAProxy |",
        "|---|---|---|---|---|---|",
    ]
    for key, title in titles:
        if key not in results:
            continue
        ok_runs = [r for side in results[key].values() for r in side if "error" not in r]
        sample = ok_runs[0] if ok_runs else {}
        if "loadgen_cpu_us_per_conn" in sample:
            lg, lg_unit = "loadgen_cpu_us_per_conn", "µs/conn"
            px, px_unit = "proxy_cpu_cores", "cores"
        elif "proxy_cpu_us_per_mb" in sample:
            lg, lg_unit, px, px_unit = "loadgen_cpu_s", "s", "proxy_cpu_us_per_mb", "µs/MB"
        else:
            lg, lg_unit, px, px_unit = "loadgen_cpu_s", "s", "", ""
        fails = " / ".join(_failures(results, key, side) for side in ("certwatch", "haproxy"))
        lines.append(
            f"| {title} | {_side_cell(results, key, 'certwatch', lg, lg_unit)} "
            f"| {_side_cell(results, key, 'haproxy', lg, lg_unit)} "
            f"| {_side_cell(results, key, 'certwatch', px, px_unit) if px else '–'} "
            f"| {_side_cell(results, key, 'haproxy', px, px_unit) if px else '–'} | {fails} |"
        )
    host_rows = [
        f"| {title} | {_side_cell(results, key, 'certwatch', 'host_idle_pct', '%')} "
        f"| {_side_cell(results, key, 'haproxy', 'host_idle_pct', '%')} "
        f"| {_side_cell(results, key, 'certwatch', 'other_cores', 'cores')} "
        f"| {_side_cell(results, key, 'haproxy', 'other_cores', 'cores')} |"
        for key, title in titles
        if _values(results, key, "certwatch", "host_idle_pct")
        or _values(results, key, "haproxy", "host_idle_pct")
    ]
    if host_rows:
        lines += [
            "",
            "## Host during the handshake runs",
            "",
            'Idle near 0 % means the host was saturated; "other work" is CPU the host spent '
            "in processes other than proxy, load generator and backend (other jobs on a shared "
            "machine; interrupt time is not counted).",
            "",
            "| scenario | host idle, certwatch run | host idle, HAProxy run "
            "| other work, certwatch run | other work, HAProxy run |",
            "|---|---|---|---|---|",
            *host_rows,
        ]
    lines += [
        "",
        "Proxy CPU = utime+stime of the proxy's whole process tree (/proc/<pid>/stat) during the "
        "measured run. All processes (load generator, proxy, backend) share the same CPUs, so "
        "connections/s at saturation include the load generator's own cost; CPU per connection "
        "does not.",
        "",
    ]
    errors = [
        f"- {key} {side} run {i + 1}: {r['error']}"
        for key, sides in results.items()
        for side, runs in sides.items()
        for i, r in enumerate(runs)
        if "error" in r
    ]
    if errors:
        lines += ["## Failed runs", "", *errors, ""]
    return "\n".join(lines)
