"""report.md and the PNG plots of a `pygw bench` run, from its results.json content."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench import scenarios as sc

PLOTS = ("throughput.png", "latency.png", "stage_costs.png")


def _fmt_rps(s: dict[str, float]) -> str:
    return f"{s['median']:,.0f} ({s['min']:,.0f}-{s['max']:,.0f})"


def _fmt_ms(s: dict[str, float]) -> str:
    return f"{s['median']:.2f} ({s['min']:.2f}-{s['max']:.2f})"


def _fmt_us(s: dict[str, float]) -> str:
    return f"{s['median']:,.1f} ({s['min']:,.1f} to {s['max']:,.1f})"


def _ratio(num: float, den: float | None) -> str:
    return f"{num / den:.2f}x" if den else "-"


def _labels(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in results["scenarios"]}


def saturation_table(results: dict[str, Any], groups: tuple[str, ...]) -> list[str]:
    summary = results["summary"]
    info = _labels(results)

    def median_rps(name: str) -> float | None:
        return summary[name]["rps"]["median"] if name in summary else None

    lines = [
        "| scenario | req/s | p50 ms | p99 ms | µs/request | errors "
        "| vs aiohttp proxy | vs nginx proxy |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, s in summary.items():
        if info[name]["group"] not in groups:
            continue
        big = info[name]["group"] == sc.BIG
        aio = median_rps("aiohttp_big" if big else "aiohttp")
        ngx = median_rps("nginx_big" if big else "nginx")
        rps = s["rps"]["median"]
        lines.append(
            f"| {info[name]['label']} | {_fmt_rps(s['rps'])} | {_fmt_ms(s['p50_ms'])} "
            f"| {_fmt_ms(s['p99_ms'])} | {s['us_per_request']['median']:,.1f} | {s['errors']} "
            f"| {_ratio(rps, aio)} | {_ratio(rps, ngx)} |"
        )
    return lines


def tracing_table(results: dict[str, Any]) -> list[str]:
    """Each sample ratio's req/s as a ratio to tracing off, paired by round like stage costs."""
    summary = results["summary"]
    info = _labels(results)
    off = summary.get("trace_off")
    lines = [
        "| tracing | req/s | µs/request | req/s vs tracing off |",
        "|---|---:|---:|---:|",
    ]
    for name, s in summary.items():
        if info[name]["group"] != sc.TRACING:
            continue
        base = off["rps"]["median"] if off is not None else None
        lines.append(
            f"| {info[name]['label']} | {_fmt_rps(s['rps'])} "
            f"| {s['us_per_request']['median']:,.1f} | {_ratio(s['rps']['median'], base)} |"
        )
    return lines


def style_overhead_table(results: dict[str, Any]) -> list[str]:
    summary = results["summary"]
    info = _labels(results)
    bare = summary.get("pygw_bare")
    lines = [
        "| style | µs/request (1 core) | over the bare route, µs | req/s vs bare |",
        "|---|---:|---:|---:|",
    ]
    for name, s in summary.items():
        if info[name]["group"] != sc.STYLES:
            continue
        us = s["us_per_request"]["median"]
        over = f"{us - bare['us_per_request']['median']:,.1f}" if bare else "-"
        ratio = _ratio(s["rps"]["median"], bare["rps"]["median"]) if bare else "-"
        lines.append(f"| {info[name]['label']} | {us:,.1f} | {over} | {ratio} |")
    return lines


def stage_table(results: dict[str, Any]) -> list[str]:
    info = _labels(results)
    summary = results["summary"]
    lines = [
        "| stage | on top of | req/s | marginal cost, µs per request (min to max) |",
        "|---|---|---:|---:|",
    ]
    for name, cost in results["stage_costs"].items():
        lines.append(
            f"| {info[name]['label']} | {info[cost['baseline']]['label']} "
            f"| {_fmt_rps(summary[name]['rps'])} | {_fmt_us(cost['cost_us'])} |"
        )
    return lines


def fixed_table(results: dict[str, Any]) -> list[str]:
    info = _labels(results)
    lines = [
        "| scenario | offered req/s | achieved req/s | p50 ms | p90 ms | p99 ms | max ms "
        "| errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, f in results["fixed_rate_summary"].items():
        lines.append(
            f"| {info[name]['label']} | {f['rate']:,.0f} | {f['achieved_rps']['median']:,.0f} "
            f"| {_fmt_ms(f['p50_ms'])} | {_fmt_ms(f['p90_ms'])} | {_fmt_ms(f['p99_ms'])} "
            f"| {f['max_ms']['median']:.2f} | {f['errors']} |"
        )
    return lines


def latency_overhead_table(results: dict[str, Any]) -> list[str]:
    """At the fixed offered rate: the latency each style adds to going to the upstream directly
    (p50 through pygw minus p50 of the upstream alone), and that against the bare route's."""
    fixed = results["fixed_rate_summary"]
    info = _labels(results)
    direct = fixed.get("direct")
    if direct is None:
        return ["(needs the `direct` scenario at the fixed rate)"]
    floor = direct["p50_ms"]["median"]
    bare = fixed.get("pygw_bare")
    bare_over = bare["p50_ms"]["median"] - floor if bare else None
    lines = [
        f"Upstream alone: p50 {floor:.3f} ms.",
        "",
        "| style | p50 ms | added latency, ms | vs the bare route's |",
        "|---|---:|---:|---:|",
    ]
    for name, f in fixed.items():
        if info[name]["group"] != sc.STYLES:
            continue
        over = f["p50_ms"]["median"] - floor
        lines.append(
            f"| {info[name]['label']} | {f['p50_ms']['median']:.3f} | {over:.3f} "
            f"| {_ratio(over, bare_over) if bare_over and bare_over > 0 else '-'} |"
        )
    return lines


# The REST-style pipeline targets: (what, scenario, measure, bound); the bare route is the base.
_TARGETS = (
    ("REST key + plan + validation + cache miss: CPU per request", "pygw_rest_miss", "cpu", 1.5),
    (
        "REST key + plan + validation + cache miss: added latency at the fixed rate",
        "pygw_rest_miss",
        "latency",
        1.5,
    ),
    ("REST key + plan + validation + cache hit: req/s", "pygw_rest_hit", "rps", 1.5),
)


def target_lines(results: dict[str, Any]) -> list[str]:
    """The pipeline targets against the bare HTTP-style route, each with its measure: CPU cost
    and added latency at most `bound` times the bare route's, req/s at least `bound` times."""
    summary = results["summary"]
    fixed = results["fixed_rate_summary"]
    bare, bare_fixed, direct = (
        summary.get("pygw_bare"),
        fixed.get("pygw_bare"),
        fixed.get("direct"),
    )
    lines = ["| target | measured | bound | met |", "|---|---:|---|---|"]
    for what, name, measure, bound in _TARGETS:
        value: float | None = None
        if measure == "cpu" and bare and name in summary:
            us = summary[name]["us_per_request"]["median"]
            value = us / bare["us_per_request"]["median"]
        elif measure == "rps" and bare and name in summary:
            value = summary[name]["rps"]["median"] / bare["rps"]["median"]
        elif measure == "latency" and bare_fixed and direct and name in fixed:
            floor = direct["p50_ms"]["median"]
            base = bare_fixed["p50_ms"]["median"] - floor
            if base > 0:
                value = (fixed[name]["p50_ms"]["median"] - floor) / base
        if value is None:
            lines.append(f"| {what} | (not run) | | |")
            continue
        met = value >= bound if measure == "rps" else value <= bound
        sign = ">=" if measure == "rps" else "<="
        lines.append(
            f"| {what} | {value:.2f}x the bare route | {sign} {bound:g}x | "
            f"{'yes' if met else 'NO'} |"
        )
    return lines


# The front end's targets against nginx as a reverse proxy, same run: (what, scenario, bound).
_NGINX_TARGETS = (
    ("bare HTTP-style proxy route: req/s", "pygw_bare", 0.7),
    ("REST cache hit: req/s", "pygw_rest_hit", 1.2),
    ("mock route: req/s", "pygw_mock_route", 1.2),
)


def _per_round(results: dict[str, Any], name: str, measure: str) -> str:
    """The scenario's `measure` over nginx's in each round (the two ran close together in it),
    as min-max: on a noisy host these move less than the ratio of the two medians."""
    by_round: dict[int, dict[str, float]] = {}
    for run in results.get("runs", ()):
        if run["scenario"] in (name, "nginx") and run.get(measure):
            by_round.setdefault(run["round"], {})[run["scenario"]] = run[measure]
    ratios = [r[name] / r["nginx"] for r in by_round.values() if name in r and "nginx" in r]
    return f"{min(ratios):.2f}-{max(ratios):.2f}x" if ratios else ""


def nginx_target_lines(results: dict[str, Any]) -> list[str]:
    """Requests per second against the nginx reverse proxy's, and the bare route's p99 against
    nginx's (bound: within 2x); whether a bound is met is read from the medians."""
    summary = results["summary"]
    nginx = summary.get("nginx")
    lines = ["| target | measured | per round | bound | met |", "|---|---:|---:|---|---|"]
    for what, name, bound in _NGINX_TARGETS:
        if nginx is None or name not in summary:
            lines.append(f"| {what} | (not run) | | | |")
            continue
        value = summary[name]["rps"]["median"] / nginx["rps"]["median"]
        lines.append(
            f"| {what} | {value:.2f}x nginx | {_per_round(results, name, 'rps')} | "
            f">= {bound:g}x | {'yes' if value >= bound else 'NO'} |"
        )
    if nginx is not None and "pygw_bare" in summary:
        value = summary["pygw_bare"]["p99_ms"]["median"] / nginx["p99_ms"]["median"]
        lines.append(
            f"| bare route: p99 at saturation | {value:.2f}x nginx's | "
            f"{_per_round(results, 'pygw_bare', 'p99_ms')} | <= 2x | "
            f"{'yes' if value <= 2 else 'NO'} |"
        )
    return lines


def routes_claim(results: dict[str, Any]) -> str:
    summary = results["summary"]
    sizes = sorted(s["routes"] for s in results["scenarios"] if s["group"] == sc.ROUTES)
    if len(sizes) < 2 or f"routes_{sizes[0]}" not in summary:
        return ""
    small = summary[f"routes_{sizes[0]}"]["rps"]["median"]
    large = summary[f"routes_{sizes[-1]}"]["rps"]["median"]
    return (
        f"Throughput at {sizes[-1]:,} routes / at {sizes[0]:,} routes: {large / small:.2f}x "
        "(the claim: flat, i.e. close to 1x)."
    )


def workers_line(results: dict[str, Any]) -> str:
    summary = results["summary"]
    if "workers_2" not in summary or "pygw_bare" not in summary:
        return ""
    one, two = summary["pygw_bare"]["rps"]["median"], summary["workers_2"]["rps"]["median"]
    return f"--workers 2 / --workers 1: {two / one:.2f}x req/s."


def mock_lines(mock: dict[str, Any]) -> list[str]:
    if not mock:
        return ["(not run)"]
    latency, faults = mock["config"]["latency_ms"], mock["config"]["faults"]
    lines = [
        f"Route `GET /mock` configured with `latency_ms: {{p50: {latency['p50']:g}, "
        f"p99: {latency['p99']:g}}}` and `faults: {{rate: "
        f"{faults['rate']:g}, status: {faults['status']}}}`, "
        f"measured by the {mock['tool']} at {mock['rate']:g} req/s for {mock['duration_s']:g} s "
        f"({mock['answered']:,} answered, {mock['unanswered']} unanswered, "
        f"{mock['unexpected_status']} unexpected statuses); tolerance "
        f"{mock['tolerance']:.0%} relative.",
        "",
        "| figure | configured | measured | relative error | within tolerance |",
        "|---|---:|---:|---:|---|",
    ]
    for name, c in mock["checks"].items():
        measured = (
            f"{c['measured']:.4f} (± {c['standard_error']:.4f} s.e.)"
            if name == "fault_rate"
            else f"{c['measured']:.2f}"
        )
        lines.append(
            f"| {name} | {c['target']:g} | {measured} | {c['relative_error']:.1%} "
            f"| {'yes' if c['ok'] else 'NO'} |"
        )
    lines += ["", f"Overall: {'ok' if mock['ok'] else 'NOT ok'}."]
    return lines


def native_lines(native: dict[str, Any] | None) -> list[str]:
    if not native:
        return ["(skipped)"]
    lines = [
        "| scenario | implementation | ns/call (median, min-max) |",
        "|---|---|---:|",
    ]
    for r in native["results"]:
        samples = r["samples_ns_per_call"]
        lines.append(
            f"| {r['group']} | {r['impl']} | {r['ns_per_call']:,.0f} "
            f"({min(samples):,.0f}-{max(samples):,.0f}) |"
        )
    lines += ["", "| ratio | value | target | met |", "|---|---:|---|---|"]
    for q in native["ratios"]:
        lines.append(
            f"| {q['name']} | {q['value']:,.2f}x | {q['target']} | {'yes' if q['met'] else 'NO'} |"
        )
    return lines


def https_lines(https: dict[str, Any] | None) -> list[str]:
    if https is None:
        return ["Not measured (--no-https)."]
    from bench.https_bench import markdown_lines

    return markdown_lines(https)


def markdown(results: dict[str, Any]) -> str:
    meta = results["meta"]
    mode = meta["mode"]
    tools = meta["tools"]
    lines = [
        f"# pygw bench, {meta['date']}",
        "",
        f"Mode `{mode['name']}`: wrk `-c{mode['connections']}` for {mode['duration_s']:g} s "
        "per run, "
        f"{mode['repeats']} interleaved round(s) (order rotated each round); figures are medians "
        "with min-max over the rounds in brackets.",
        f"Machine: {meta['cpus']} CPUs, {meta['cpu_model']}, {meta['platform']}, "
        f"Python {meta['python']}.",
        f"Tools: {tools['wrk']}; {tools['nginx']}; oha: {tools['oha'] or 'not installed'}; "
        f"matplotlib {tools['matplotlib']}.",
        f"Pinning: {meta['pinning']['note']}.",
        f"Fixed-rate latencies: {meta['fixed_rate_tool']}. {meta['coordinated_omission']}.",
        "",
        "µs/request is 1 / req/s: with one gateway process pinned to one core and saturated, the "
        "CPU time a request costs the proxy (the upstream and wrk run on other cores).",
        "",
        "## Peers and styles (41-byte upstream body)",
        "",
        *saturation_table(results, (sc.PEERS, sc.STYLES)),
        "",
        "## Overhead per style",
        "",
        *style_overhead_table(results),
        "",
        "## Pipeline targets (against the bare HTTP-style route)",
        "",
        *target_lines(results),
        "",
        "## Front-end targets (against nginx as a reverse proxy, same run)",
        "",
        *nginx_target_lines(results),
        "",
        "## Overhead per stage (each alone on the same one-route API)",
        "",
        *stage_table(results),
        "",
        "## Route table size",
        "",
        *saturation_table(results, (sc.ROUTES,)),
        "",
        routes_claim(results),
        "",
        "## Workers",
        "",
        *saturation_table(results, (sc.WORKERS,)),
        "",
        workers_line(results),
        "",
        "## Tracing (OpenTelemetry spans at three sample ratios)",
        "",
        *tracing_table(results),
        "",
        "## 64 KiB upstream body",
        "",
        *saturation_table(results, (sc.BIG,)),
        "",
        f"## Latency at a fixed offered rate ({mode['rate']:g} req/s)",
        "",
        *fixed_table(results),
        "",
        "Added latency per style (p50 minus the upstream's own p50 at the same rate):",
        "",
        *latency_overhead_table(results),
        "",
        "## Mock route as a load-testing target",
        "",
        *mock_lines(results["mock_check"]),
        "",
        "## Native core against the pure-Python references (bench/native_bench.py)",
        "",
        *native_lines(results["native"]),
        "",
        "## HTTPS and HTTP/2 against nginx terminating TLS (bench/https_bench.py)",
        "",
        *https_lines(results.get("https")),
        "",
        "## Plots",
        "",
        "![throughput](throughput.png)",
        "",
        "![latency](latency.png)",
        "",
        "![stage costs](stage_costs.png)",
        "",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# Plots


def _err(s: dict[str, float]) -> tuple[float, float]:
    return (max(0.0, s["median"] - s["min"]), max(0.0, s["max"] - s["median"]))


def plot_throughput(results: dict[str, Any], path: Path) -> None:
    import matplotlib.pyplot as plt

    info = _labels(results)
    names = list(results["summary"])
    values = [results["summary"][n]["rps"]["median"] for n in names]
    errs = list(zip(*[_err(results["summary"][n]["rps"]) for n in names], strict=True))
    fig, ax = plt.subplots(figsize=(10, 0.35 * len(names) + 1.5))
    y = range(len(names))
    ax.barh(
        list(y), values, xerr=[list(errs[0]), list(errs[1])] if names else None, color="#4c72b0"
    )
    ax.set_yticks(list(y), [info[n]["label"] for n in names], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("requests per second (median, bars: min-max)")
    ax.set_title("Throughput at saturation (wrk)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_latency(results: dict[str, Any], path: Path) -> None:
    import matplotlib.pyplot as plt

    info = _labels(results)
    fixed = results["fixed_rate_summary"]
    sat = results["summary"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(14, 0.35 * len(sat) + 2))
    names = list(sat)
    y = list(range(len(names)))
    height = 0.4
    left.barh(
        [v - height / 2 for v in y],
        [sat[n]["p50_ms"]["median"] for n in names],
        height,
        label="p50",
    )
    left.barh(
        [v + height / 2 for v in y],
        [sat[n]["p99_ms"]["median"] for n in names],
        height,
        label="p99",
    )
    left.set_yticks(y, [info[n]["label"] for n in names], fontsize=7)
    left.invert_yaxis()
    left.set_xscale("log")
    left.set_xlabel("ms (log scale)")
    left.set_title("At saturation (wrk, closed loop)")
    left.legend()
    fnames = list(fixed)
    fy = list(range(len(fnames)))
    h3 = 0.27
    for offset, key, label in (
        (-h3, "p50_ms", "p50"),
        (0.0, "p90_ms", "p90"),
        (h3, "p99_ms", "p99"),
    ):
        right.barh(
            [v + offset for v in fy], [fixed[n][key]["median"] for n in fnames], h3, label=label
        )
    right.set_yticks(fy, [info[n]["label"] for n in fnames], fontsize=7)
    right.invert_yaxis()
    if fnames:  # a run of `--only` scenarios may have no fixed-rate run: nothing to scale
        right.set_xscale("log")
    right.set_xlabel("ms (log scale)")
    rate = results["meta"]["mode"]["rate"]
    tool = "oha" if "oha" in results["meta"]["fixed_rate_tool"] else "open-loop generator"
    right.set_title(f"At a fixed offered rate, {rate:g} req/s ({tool})")
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_stage_costs(results: dict[str, Any], path: Path) -> None:
    """A waterfall per baseline: the baseline's µs per request, then each stage's marginal cost."""
    import matplotlib.pyplot as plt

    info = _labels(results)
    summary = results["summary"]
    by_base: dict[str, list[str]] = {}
    for name, cost in results["stage_costs"].items():
        by_base.setdefault(cost["baseline"], []).append(name)
    panels = max(1, len(by_base))
    fig, axes = plt.subplots(1, panels, figsize=(7 * panels, 5), squeeze=False)
    for ax, (base, stages) in zip(axes[0], by_base.items(), strict=False):
        base_us = summary[base]["us_per_request"]["median"]
        labels = [info[base]["label"]]
        bottoms, heights, colors = [0.0], [base_us], ["#8c8c8c"]
        level = base_us
        for name in stages:
            cost = results["stage_costs"][name]["cost_us"]["median"]
            labels.append(info[name]["label"])
            bottoms.append(level if cost >= 0 else level + cost)
            heights.append(abs(cost))
            colors.append("#c44e52" if cost >= 0 else "#55a868")
            level += cost
        x = list(range(len(labels)))
        ax.bar(x, heights, bottom=bottoms, color=colors)
        ax.set_xticks(x, labels, rotation=30, ha="right", fontsize=8)
        ax.set_ylabel("µs per request (1 core)")
        ax.set_title(f"Stage costs on top of: {info[base]['label']}", fontsize=9)
    if not by_base:
        axes[0][0].set_title("no stage scenarios in this run")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_report(results: dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    plot_throughput(results, out / "throughput.png")
    plot_latency(results, out / "latency.png")
    plot_stage_costs(results, out / "stage_costs.png")
    text = markdown(results)
    # A NaN figure (a run with no answers) is printed as "nan": say what that means.
    if "nan" in text:
        text += "\n`nan`: no successful request in that run.\n"
    (out / "report.md").write_text(text)
