"""Run the benchmark: `bench/run [--messages N] [--only NAME,...] [--reference]`.

Starts Postern (and, with --reference, Postfix and Postfix with OpenDKIM)
from nothing on loopback, drives each scenario with real SMTP sessions
(STARTTLS, AUTH), and writes the figures as Markdown and JSON under
bench/results/. Every figure depends on what else the machine is doing:
compare only figures measured in the same run.
"""

import argparse
import asyncio
import json
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from bench import postfix
from bench.load import close_all, drive, hold_idle
from bench.measure import MemorySampler, cpu_seconds, pss_kib
from bench.stacks import RECIPIENT_DOMAIN, Postern, Reference, SinkProcess
from tests.support.processes import free_port

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Scenario:
    name: str
    size: int = 1024
    recipients: int = 1
    dkim: str = "rsa"
    workers: int = 1
    share: float = 1.0  # of --messages; big messages get fewer
    sessions: int = 20
    # Settings for the gateway and workers, e.g. a pipeline stage turned off:
    # (("POSTERN_SOME_STAGE", "off"),). Scenarios grow with the pipeline.
    env: tuple = ()
    # Offer load at this share of the delivered/s that the scenario named
    # paced_by reached earlier in the same run, instead of as fast as possible.
    paced_by: str = ""
    pace: float = 1.0


SCENARIOS = [
    Scenario("1KB rsa w1"),
    Scenario("1KB rsa w1 half load", paced_by="1KB rsa w1", pace=0.5),
    Scenario("1KB rsa w2", workers=2),
    Scenario("1KB rsa w4", workers=4),
    Scenario("1KB ed25519 w1", dkim="ed25519"),
    Scenario("100KB rsa w1", size=100 * 1024, share=0.5),
    Scenario("5MB rsa w1", size=5 * 1024 * 1024, share=0.02, sessions=4),
    Scenario("1KB 50rcpt rsa w1", recipients=50, share=0.2),
]
REFERENCE_SCENARIO = SCENARIOS[0]
IDLE_CONNECTIONS = 1000


def percentile(values, fraction):
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def run_scenario(system, scenario, messages, sink_port, run_dir, time_limit,
                 rate=None):
    count = max(1, int(messages * scenario.share))
    recipients = [f"r{i}@{RECIPIENT_DOMAIN}" for i in range(scenario.recipients)]
    target = system.target(scenario.dkim)
    sink = SinkProcess(sink_port, run_dir).start()
    roles = system.roles()
    cpu_before = {role: cpu_seconds(roots) for role, roots in roles.items()}
    prefix = f"{system.name}-{scenario.name}".replace(" ", "_")
    try:
        with MemorySampler(roles) as memory:
            load = asyncio.run(drive(target, prefix, count, scenario.sessions,
                                     scenario.size, recipients, time_limit, rate))
            expected = len(load.accepted_at) * scenario.recipients
            sink.wait_for(expected, time_limit)
        cpu = {role: cpu_seconds(roots) - cpu_before[role]
               for role, roots in roles.items()}
    finally:
        final = sink.stop()
    row = summarise(system.name, scenario, load, final, cpu, memory.report())
    row["offered_per_s"] = rate
    return row


def summarise(system, scenario, load, sink, cpu, memory):
    arrived_at = sink.get("arrived_at", {})
    accepted = len(load.accepted_at)
    delivered = [seq for seq in load.accepted_at if seq in arrived_at]
    latencies = [arrived_at[seq] - load.data_sent_at[seq] for seq in delivered]
    first = min(load.data_sent_at.values(), default=load.started)
    last_accept = max(load.accepted_at.values(), default=first)
    last_arrival = max((arrived_at[seq] for seq in delivered), default=first)
    cpu_total = sum(cpu.values())
    per_thousand = 1000 / accepted if accepted else 0
    return {
        "system": system,
        "scenario": scenario.name,
        "size_bytes": scenario.size,
        "recipients": scenario.recipients,
        "dkim": scenario.dkim if system != "postfix" else "none",
        "workers": scenario.workers if system == "postern" else None,
        "sessions": scenario.sessions,
        "accepted": accepted,
        "delivered": len(delivered),
        "dkim_signed_at_sink": sink.get("signed", 0),
        "duplicates": sum(1 for count in sink.get("arrivals", {}).values()
                          if count > scenario.recipients),
        "failures": dict(load.failures),
        "accepted_per_s": _rate(accepted, last_accept - first),
        "delivered_per_s": _rate(len(delivered), last_arrival - first),
        "latency_p50_s": _round(percentile(latencies, 0.50)),
        "latency_p95_s": _round(percentile(latencies, 0.95)),
        "latency_p99_s": _round(percentile(latencies, 0.99)),
        "cpu_s_per_1000": round(cpu_total * per_thousand, 2),
        "cpu_s_per_1000_by_role": {role: round(s * per_thousand, 2)
                                   for role, s in cpu.items()},
        "memory": memory,
    }


def _rate(count, seconds):
    return round(count / seconds, 1) if seconds > 0 else None


def _round(value):
    return None if value is None else round(value, 4)


def run_idle(system):
    """Memory of one gateway process holding many idle, authenticated
    sessions."""
    gateway = system.roles()["gateway"][0]
    before = pss_kib(gateway)

    async def hold():
        sessions = await hold_idle(system.target(), IDLE_CONNECTIONS)
        held = len(sessions)
        during = pss_kib(gateway)
        await close_all(sessions)
        return held, during

    held, during = asyncio.run(hold())
    return {
        "system": system.name,
        "scenario": f"{IDLE_CONNECTIONS} idle sessions",
        "connections_held": held,
        "gateway_pss_before_mib": round(before / 1024, 1),
        "gateway_pss_holding_mib": round(during / 1024, 1),
        "kib_per_connection": round((during - before) / held, 1) if held else None,
    }


# Postern rows compared with the reference: the same load with one, two (one
# per core here) and four worker processes (delivery waits on the network and
# the database more than it computes, so processes beyond the cores help).
COMPARED_SCENARIOS = ("1KB rsa w1", "1KB rsa w2", "1KB rsa w4")


def ratios(rows):
    """Postern's figures over each reference system's, same load."""
    found = []
    for name in COMPARED_SCENARIOS:
        postern = next((r for r in rows if r["system"] == "postern"
                        and r["scenario"] == name), None)
        for reference in rows:
            if postern is None or reference["system"] == "postern":
                continue
            found.append({
                "against": reference["system"],
                "scenario": name,
                **{key: _ratio(postern[key], reference[key]) for key in (
                    "accepted_per_s", "delivered_per_s", "latency_p50_s",
                    "latency_p99_s", "cpu_s_per_1000")},
            })
    return found


def _ratio(ours, theirs):
    return round(ours / theirs, 2) if ours and theirs else None


def markdown(meta, rows, idle, compared):
    lines = [
        f"# Postern benchmark, {meta['date']}",
        "",
        f"{meta['cores']} cores, {meta['machine']}; {meta['messages']} messages per "
        "full scenario. Latency: from the client's DATA to the sink's 250. CPU: "
        "all processes of the system under test, seconds per 1,000 messages. "
        "Memory: peak PSS of all processes of a role (largest single process in "
        "brackets), MiB. Figures move with the machine's load: compare only "
        "figures from one run.",
        "",
        "| system | scenario | offered/s | accepted/s | delivered/s | p50 s | p95 s "
        "| p99 s | CPU s/1000 | peak PSS MiB | failures |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        memory = ", ".join(f"{role} {m['peak_pss_mib']} ({m['largest_process_mib']})"
                           for role, m in row["memory"].items())
        failures = sum(row["failures"].values())
        lines.append(
            f"| {row['system']} | {row['scenario']} "
            f"| {row.get('offered_per_s') or 'all at once'} | {row['accepted_per_s']} "
            f"| {row['delivered_per_s']} | {row['latency_p50_s']} "
            f"| {row['latency_p95_s']} | {row['latency_p99_s']} "
            f"| {row['cpu_s_per_1000']} | {memory} | {failures} |"
        )
    if idle:
        lines += ["", "| idle sessions held | gateway PSS before MiB | holding MiB "
                  "| KiB per connection |", "| --- | --- | --- | --- |"]
        lines.append(f"| {idle['connections_held']} | {idle['gateway_pss_before_mib']} "
                     f"| {idle['gateway_pss_holding_mib']} "
                     f"| {idle['kib_per_connection']} |")
    if compared:
        lines += ["", "Postern as a ratio of the reference, same run "
                  "(throughput: higher is better; latency and CPU: lower is better):",
                  "", "| against | scenario | accepted/s | delivered/s | p50 | p99 "
                  "| CPU/1000 |", "| --- | --- | --- | --- | --- | --- | --- |"]
        for c in compared:
            lines.append(
                f"| {c['against']} | {c['scenario']} | {c['accepted_per_s']} "
                f"| {c['delivered_per_s']} | {c['latency_p50_s']} "
                f"| {c['latency_p99_s']} | {c['cpu_s_per_1000']} |"
            )
    return "\n".join(lines) + "\n"


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="bench/run",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=1000,
                        help="messages in a full scenario (default 1000)")
    parser.add_argument("--only", default="",
                        help="comma-separated scenario names; 'idle' for the idle "
                             "sessions; default all")
    parser.add_argument("--reference", action="store_true",
                        help="also measure Postfix and Postfix with OpenDKIM")
    parser.add_argument("--time-limit", type=int, default=300,
                        help="seconds a scenario may take (default 300)")
    parser.add_argument("--list", action="store_true", help="list the scenarios")
    parser.add_argument("--keep", action="store_true",
                        help="keep the run directory (process logs) afterwards")
    return parser.parse_args(argv)


def main(argv):
    args = parse_args(argv)
    if args.list:
        for scenario in SCENARIOS:
            print(scenario.name)
        print("idle")
        return 0
    wanted = {name.strip() for name in args.only.split(",") if name.strip()}
    scenarios = [s for s in SCENARIOS if not wanted or s.name in wanted]
    # The idle scenario holds 1,000 sockets in this process and the gateway.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 8192)), hard))

    run_dir = Path(tempfile.mkdtemp(prefix="postern-bench-"))
    sink_port = free_port()
    rows, idle = [], None
    system = Postern(run_dir, sink_port)
    try:
        for scenario in scenarios:
            rate = pace_for(scenario, rows)
            if rate == 0:
                print(f"skipped {scenario.name}: needs {scenario.paced_by} first",
                      file=sys.stderr)
                continue
            system.configure(scenario.workers, dict(scenario.env))
            print(f"running {system.name}: {scenario.name}", flush=True)
            rows.append(run_scenario(system, scenario, args.messages, sink_port,
                                     run_dir, args.time_limit, rate))
            print(json.dumps(rows[-1]), flush=True)
        if not wanted or "idle" in wanted:
            # A gateway of its own: one that carried the 5 MB scenario
            # gives memory back meanwhile and hides what sessions cost.
            system.configure(1, {}, fresh_gateway=True)
            print(f"running {system.name}: idle sessions", flush=True)
            idle = run_idle(system)
            print(json.dumps(idle), flush=True)
    finally:
        system.stop()

    try:
        if args.reference and not postfix.installed():
            print("reference skipped: Postfix is not installed "
                  "(apt-get install postfix opendkim)", file=sys.stderr)
        elif args.reference:
            rows += run_reference(run_dir, sink_port, args)
    finally:
        if args.keep:
            print(f"run directory kept: {run_dir}", flush=True)
        else:
            shutil.rmtree(run_dir, ignore_errors=True)

    meta = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cores": os.cpu_count(),
        "machine": f"{platform.system()} {platform.machine()}, Python "
                   f"{platform.python_version()}",
        "messages": args.messages,
    }
    compared = ratios(rows)
    write_results(meta, rows, idle, compared)
    print(markdown(meta, rows, idle, compared))
    return 0


def pace_for(scenario, rows):
    """The offered rate for a paced scenario (0 when the scenario it is paced
    by has not run), None for one that is not paced."""
    if not scenario.paced_by:
        return None
    for row in rows:
        if row["scenario"] == scenario.paced_by and row["delivered_per_s"]:
            return round(row["delivered_per_s"] * scenario.pace, 1)
    return 0


def run_reference(run_dir, sink_port, args):
    postern_tls = Path(run_dir) / "gateway-cert.pem", Path(run_dir) / "gateway-key.pem"
    rows = []
    for dkim in (False, True):
        reference = Reference(run_dir, sink_port, *postern_tls, dkim=dkim)
        try:
            print(f"running {reference.name}: {REFERENCE_SCENARIO.name}", flush=True)
            rows.append(run_scenario(reference, REFERENCE_SCENARIO, args.messages,
                                     sink_port, run_dir, args.time_limit))
            print(json.dumps(rows[-1]), flush=True)
        finally:
            reference.stop()
    return rows


def write_results(meta, rows, idle, compared):
    RESULTS.mkdir(exist_ok=True)
    stem = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M") + f"-{meta['cores']}cores"
    (RESULTS / f"{stem}.json").write_text(json.dumps(
        {"meta": meta, "scenarios": rows, "idle": idle, "ratios": compared}, indent=2
    ) + "\n")
    (RESULTS / f"{stem}.md").write_text(markdown(meta, rows, idle, compared))
    (RESULTS / "latest.md").write_text(markdown(meta, rows, idle, compared))
    print(f"written: bench/results/{stem}.md and .json", flush=True)


if __name__ == "__main__":
    started = time.monotonic()
    code = main(sys.argv[1:])
    print(f"bench: {time.monotonic() - started:.0f} s", file=sys.stderr)
    sys.exit(code)
