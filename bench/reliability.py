"""Run the reliability suite and render its figures as docs/reliability.md.

    .venv/bin/python bench/reliability.py                # the long form (about 10 minutes)
    .venv/bin/python bench/reliability.py --form short   # what CI runs (about 2 minutes)

Runs `pytest tests/reliability` with the form's settings, the tests write what they tried and
survived to a figures file (APITWIN_FIGURES), and this script turns the file and the test outcomes
into the tables of docs/reliability.md. The exit status is pytest's.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ElementTree
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SUITE = REPO / "tests" / "reliability"
RESULTS = HERE / "results"

# Settings per form; the short form is the tests' own defaults (what CI runs).
FORMS: dict[str, dict[str, str]] = {
    "short": {},
    "long": {
        "APITWIN_SOAK_SECONDS": "300",
        "APITWIN_CRASH_WRITES": "600",
        "APITWIN_CRASH_WORKERS": "8",
        "APITWIN_ISOLATION_STEPS": "80",  # per connection; the read-back pages hold 100
    },
}


def run_suite(form: str, figures: Path, junit: Path, extra: list[str]) -> tuple[int, float]:
    figures.unlink(missing_ok=True)
    env = {**os.environ, **FORMS[form], "APITWIN_FIGURES": str(figures)}
    command = [sys.executable, "-m", "pytest", str(SUITE), "-q", f"--junitxml={junit}", *extra]
    began = time.monotonic()
    result = subprocess.run(command, cwd=REPO, env=env, check=False)
    return result.returncode, time.monotonic() - began


def outcomes(junit: Path) -> list[dict[str, Any]]:
    found = []
    for case in ElementTree.parse(junit).getroot().iter("testcase"):
        state = "passed"
        for child in case:
            if child.tag in ("failure", "error"):
                state = "failed"
            elif child.tag == "skipped":
                state = "skipped"
        module = case.get("classname", "").rsplit(".", 1)[-1]
        found.append(
            {
                "test": f"{module}::{case.get('name')}",
                "outcome": state,
                "seconds": float(case.get("time") or 0),
            }
        )
    return found


class Section(dict[str, Any]):
    """One section of the figures; a figure the run did not produce reads as "n/a"."""

    def __missing__(self, name: str) -> str:
        return "n/a"


def summary_rows(figures: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(area, what was tried, what held, lost) for the sections this script knows."""
    rows = []
    if "crash" in figures:
        c = Section(figures["crash"])
        rows.append(
            (
                "Crash safety",
                f"`kill -9` after {c['acknowledged_writes']} acknowledged writes from "
                f"{c['workers']} concurrent clients, deliveries in flight",
                f"`integrity_check` {c['integrity_check']}; every acknowledged write found; "
                f"{c['events_delivered']}/{c['events_accepted']} accepted events delivered after "
                f"restart ({c['redelivered_after_restart']} sent again); no change without its "
                "events",
                "0",
            )
        )
    for key in sorted(k for k in figures if k.startswith("disk_full")):
        d = Section(figures[key])
        rows.append(
            (
                "Full disk",
                f"{d['method']}: writes through the partner API, the admin API and MCP; "
                "`kill -9` while full",
                f"{d['writes_refused_with_507']} writes refused with 507, nothing applied; reads "
                "served; writes succeed once there is room, in the same process and after the "
                f"restart; {d['acknowledged_kept']} acknowledged writes kept; `integrity_check` ok",
                "0",
            )
        )
    if "isolation" in figures:
        i = Section(figures["isolation"])
        rows.append(
            (
                "Isolation",
                f"{i['connections']} connections, {i['steps']} seeded random steps (seed "
                f"{i['seed']}) run concurrently: {i['records_created']} records, "
                f"{i['faults_added']} faults, {i['deliveries']} deliveries",
                "records, journal, faults and deliveries read back through the partner API, the "
                f"admin API and MCP: {i['crossings']} crossings",
                "0",
            )
        )
    if "security" in figures:
        t = Section(figures["security"])
        rows.append(
            (
                "Control-plane security",
                f"{t['admin_routes']} admin routes and `/mcp` without the token; "
                f"{t['secrets_checked']} secrets traced; {t['webhook_targets_refused']} forbidden "
                f"webhook targets, {t['redirects_not_followed']} redirects",
                f"{t['unauthorised_calls_refused']} calls refused with 401; secrets in full only "
                "at creation; every forbidden target refused when dialled; no redirect followed",
                "n/a",
            )
        )
    if "soak" in figures:
        k = Section(figures["soak"])
        rows.append(
            (
                "Load",
                f"{k['seconds']} s at {k['target_rate']} requests/s, achieved "
                f"{k['achieved_rate']}/s ({k['requests']} requests, {k['deliveries']} webhooks)",
                f"{k['errors']} errors; p50 {k['p50_ms']} ms, p99 {k['p99_ms']} ms; resident "
                f"memory {k['rss_after_warm_up_mib']} → {k['rss_at_end_mib']} MiB; journal "
                f"{k['journal_entries_kept']} entries (ring {k['journal_ring']})",
                "0",
            )
        )
    known = {"crash", "isolation", "security", "soak"}
    for key in sorted(k for k in figures if k not in known and not k.startswith("disk_full")):
        # Sections other tests add: their figures as they wrote them.
        shown = "; ".join(
            f"{name.replace('_', ' ')}: {value}" for name, value in figures[key].items()
        )
        rows.append((key.replace("_", " ").capitalize(), shown, "see the figures below", "n/a"))
    return rows


def render(
    form: str, figures: dict[str, Any], tests: list[dict[str, Any]], seconds: float, status: int
) -> str:
    passed = sum(1 for t in tests if t["outcome"] == "passed")
    failed = sum(1 for t in tests if t["outcome"] == "failed")
    skipped = sum(1 for t in tests if t["outcome"] == "skipped")
    settings = ", ".join(f"`{k}={v}`" for k, v in FORMS[form].items()) or "the tests' defaults"
    lines = [
        "# Reliability figures",
        "",
        "Generated by `bench/reliability.py` from a real run of `tests/reliability` (do not edit",
        "by hand; run `.venv/bin/python bench/reliability.py` for the long form, `--form short`",
        "for what CI runs).",
        "",
        f"- form: **{form}** ({settings})",
        f"- run: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}, {seconds:.0f} s, "
        f"Python {platform.python_version()} on {platform.system()} {platform.machine()}, "
        f"{os.cpu_count()} CPUs",
        f"- tests: {passed} passed, {failed} failed, {skipped} skipped"
        + ("" if status == 0 else f" (pytest exit status {status})"),
        "",
        "| area | tried | held | lost |",
        "| --- | --- | --- | --- |",
    ]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in summary_rows(figures)]
    lines += ["", "## Figures", ""]
    for section in sorted(figures):
        lines += [f"### {section}", "", "| figure | value |", "| --- | --- |"]
        lines += [f"| {name} | {value} |" for name, value in sorted(figures[section].items())]
        lines.append("")
    lines += ["## Tests", "", "| test | outcome | seconds |", "| --- | --- | --- |"]
    lines += [f"| `{t['test']}` | {t['outcome']} | {t['seconds']:.1f} |" for t in tests]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--form", choices=sorted(FORMS), default="long")
    parser.add_argument("--output", type=Path, default=REPO / "docs" / "reliability.md")
    parser.add_argument("pytest_args", nargs="*", help="passed on to pytest (after --)")
    args = parser.parse_args(argv)
    RESULTS.mkdir(exist_ok=True)
    figures_file = RESULTS / f"reliability-{args.form}.json"
    with tempfile.TemporaryDirectory() as scratch:
        junit = Path(scratch) / "junit.xml"
        status, seconds = run_suite(args.form, figures_file, junit, args.pytest_args)
        tests = outcomes(junit) if junit.exists() else []
    figures = json.loads(figures_file.read_text()) if figures_file.exists() else {}
    args.output.write_text(render(args.form, figures, tests, seconds, status))
    print(f"wrote {args.output} ({args.form} form, pytest status {status})")
    return status


if __name__ == "__main__":
    sys.exit(main())
