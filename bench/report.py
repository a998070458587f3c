"""Markdown report of the proxy benchmark: medians, ranges, ratios against goals per reference."""

from __future__ import annotations

import statistics
from dataclasses import dataclass

Results = dict[str, dict[str, list[dict]]]

CANDIDATE = "certwatch"
REFERENCES = ("haproxy", "nginx")
LABELS = {"certwatch": "certwatch", "haproxy": "HAProxy", "nginx": "nginx"}
SIDES = (CANDIDATE, *REFERENCES)

# A resumption scenario is valid only when (nearly) every measured handshake resumed on
# every side; each loadgen client gets its session in a priming pass before the clock.
RESUMED_MIN = 0.99


@dataclass(frozen=True)
class Goal:
    """certwatch/reference ratio of the medians of `metric` in `scenario` must be `op` the
    reference's bound (`haproxy`, `nginx`; None: the ratio is reported, no goal)."""

    scenario: str
    metric: str
    label: str
    op: str | None  # "≥", "≤" or None (reported, no goal)
    haproxy: float | None = None
    nginx: float | None = None

    def bound(self, reference: str) -> float | None:
        """The goal's bound against `reference` ("haproxy" or "nginx")."""
        return self.haproxy if reference == "haproxy" else self.nginx


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


def resumption_valid(results: Results, scenario: str) -> bool | None:
    """None for a full-handshake scenario; else whether every run of every side that ran
    resumed at least RESUMED_MIN of its handshakes."""
    fractions = [
        float(r["resumed_fraction"])
        for runs in results.get(scenario, {}).values()
        for r in runs
        if "resumed_fraction" in r
    ]
    if not fractions:
        return None
    return min(fractions) >= RESUMED_MIN


def _ratio_cells(results: Results, g: Goal, cw: list[float], reference: str) -> list[str]:
    ref = _values(results, g.scenario, reference, g.metric)
    if not cw or not ref:
        return ["–", "–", "–"]
    med = statistics.median(ref)
    ratio = statistics.median(cw) / med if med else 0.0
    bound = g.bound(reference)
    if g.op is None or bound is None:
        return [f"{ratio:.3f}×", "–", "–"]
    ok = ratio >= bound if g.op == "≥" else ratio <= bound
    met = "yes" if ok else "**no**"
    if resumption_valid(results, g.scenario) is False:
        met = "**invalid** (not all resumed)"
    return [f"{ratio:.3f}×", f"{g.op} {bound:g}×", met]


def goal_row(results: Results, g: Goal) -> str | None:
    """One table row, or None when the scenario was not run."""
    cw = _values(results, g.scenario, CANDIDATE, g.metric)
    if not cw and not any(_values(results, g.scenario, ref, g.metric) for ref in REFERENCES):
        return None
    cells = [g.label, *(cell(_values(results, g.scenario, s, g.metric)) for s in SIDES)]
    for ref in REFERENCES:
        cells += _ratio_cells(results, g, cw, ref)
    return "| " + " | ".join(cells) + " |"


def _side_cell(results: Results, scenario: str, side: str, metric: str, unit: str) -> str:
    v = _values(results, scenario, side, metric)
    return f"{cell(v)} {unit}" if v else "–"


def _failures(results: Results, scenario: str, side: str) -> str:
    """Failed connections (+ stalled ones) and failed runs of one side, summed over runs;
    in a full-handshake scenario also any handshake that resumed (there must be none)."""
    runs = results.get(scenario, {}).get(side, [])
    failed = int(sum(float(r.get("failures", 0)) for r in runs))
    stalled = int(sum(float(r.get("stalled", 0)) for r in runs))
    errors = sum(1 for r in runs if "error" in r)
    text = f"{failed}" + (f" (+{stalled} stalled)" if stalled else "")
    if not any("resumed_fraction" in r for r in runs):
        resumed = int(sum(float(r.get("resumed", 0)) for r in runs))
        text += f", {resumed} RESUMED (not full handshakes)" if resumed else ""
    return text + (f", {errors} run(s) failed" if errors else "")


def _resumption_rows(results: Results, titles: list[tuple[str, str]]) -> list[str]:
    rows = []
    for key, title in titles:
        valid = resumption_valid(results, key)
        if valid is None:
            continue
        cells = [title]
        for side in SIDES:
            v = _values(results, key, side, "resumed_fraction")
            cells.append(f"{statistics.median(v):.4f} (lowest {min(v):.4f})" if v else "–")
        cells.append("yes" if valid else f"**no**: a run resumed < {RESUMED_MIN:g}")
        rows.append("| " + " | ".join(cells) + " |")
    return rows


def _cpu_rows(results: Results, titles: list[tuple[str, str]]) -> list[str]:
    rows = []
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
        cells = [title]
        cells += [_side_cell(results, key, s, lg, lg_unit) for s in SIDES]
        cells += [_side_cell(results, key, s, px, px_unit) if px else "–" for s in SIDES]
        cells.append(" / ".join(_failures(results, key, s) for s in SIDES))
        rows.append("| " + " | ".join(cells) + " |")
    return rows


def render(
    env: dict[str, str], results: Results, goals: tuple[Goal, ...], titles: list[tuple[str, str]]
) -> str:
    """The whole report: environment, goal table, resumption check, CPU tables, method notes."""
    names = [LABELS[s] for s in SIDES]
    lines = ["# certwatch offload vs HAProxy and nginx", ""]
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
        "Cells: median [min–max] over the runs; ratio = certwatch median / the reference's median.",
        "",
        f"| metric | {' | '.join(names)} | ÷ HAProxy | goal | met? | ÷ nginx | goal | met? |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [row for g in goals if (row := goal_row(results, g)) is not None]
    resumption = _resumption_rows(results, titles)
    if resumption:
        lines += [
            "",
            "## Resumption check",
            "",
            "Fraction of the measured connections whose handshake resumed the client's session "
            f"(`SSL_session_reused`), median (lowest) over the runs; the scenario is valid "
            f"when every run of every side resumed at least {RESUMED_MIN:g}.",
            "",
            f"| scenario | {' | '.join(names)} | valid? |",
            "|---|---|---|---|---|",
            *resumption,
        ]
    lines += [
        "",
        "## Load generator and proxy CPU per scenario",
        "",
        "| scenario | "
        + " | ".join(f"loadgen CPU, {n} run" for n in names)
        + " | "
        + " | ".join(f"proxy CPU, {n}" for n in names)
        + f" | failed conns {' / '.join(names)} |",
        "|---|---|---|---|---|---|---|---|",
        *_cpu_rows(results, titles),
    ]
    host_rows = [
        "| "
        + " | ".join(
            [
                title,
                *(_side_cell(results, key, s, "host_idle_pct", "%") for s in SIDES),
                *(_side_cell(results, key, s, "other_cores", "cores") for s in SIDES),
            ]
        )
        + " |"
        for key, title in titles
        if any(_values(results, key, s, "host_idle_pct") for s in SIDES)
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
            "| scenario | "
            + " | ".join(f"host idle, {n} run" for n in names)
            + " | "
            + " | ".join(f"other work, {n} run" for n in names)
            + " |",
            "|---|---|---|---|---|---|---|",
            *host_rows,
        ]
    lines += [
        "",
        "Proxy CPU = utime+stime of the proxy's whole process tree (/proc/<pid>/stat) during the "
        "measured run. All processes (load generator, proxy, backend) share the same CPUs, so "
        "connections/s at saturation include the load generator's own cost; handshakes per "
        "proxy CPU second do not.",
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
