"""CPU time and memory of the processes under test, read from /proc.

CPU: user + system time of each process tree (a root and every descendant
alive at the time of reading; children that already exited are counted in
their parent's cutime/cstime once reaped). Memory: PSS from
/proc/PID/smaps_rollup, so that pages shared between a parent and its forked
children are split between them rather than counted in full by each.
"""

import os
import threading
from collections import defaultdict
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid):
    text = Path(f"/proc/{pid}/stat").read_text()
    # The command name may hold spaces and parentheses; fields follow the last ")".
    return text[text.rindex(")") + 2 :].split()


def children_by_parent():
    tree = defaultdict(list)
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            ppid = int(_stat_fields(entry.name)[1])
        except (OSError, ValueError, IndexError):
            continue
        tree[ppid].append(int(entry.name))
    return tree


def process_tree(root, tree=None):
    tree = tree if tree is not None else children_by_parent()
    found, pending = [], [root]
    while pending:
        pid = pending.pop()
        found.append(pid)
        pending.extend(tree.get(pid, []))
    return found


def cpu_seconds(roots):
    """User + system seconds used so far by the trees under roots."""
    tree = children_by_parent()
    total = 0
    for root in roots:
        for pid in process_tree(root, tree):
            try:
                fields = _stat_fields(pid)
            except OSError:
                continue
            # utime, stime, cutime, cstime: fields 14-17 of proc(5).
            total += sum(int(value) for value in fields[11:15])
    return total / CLOCK_TICKS


def pss_kib(pid):
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def command_name(pid):
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"


class MemorySampler:
    """Samples the PSS of every process in the given trees until stopped;
    keeps each role's peak total and the peak of its largest process."""

    def __init__(self, roles, interval=0.25):
        self.roles = roles  # role name -> list of root pids
        self.interval = interval
        self.peak_total = defaultdict(int)  # role -> KiB
        self.peak_process = defaultdict(int)  # role -> KiB
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.sample()

    def _run(self):
        while not self._stop.wait(self.interval):
            self.sample()

    def sample(self):
        tree = children_by_parent()
        for role, roots in self.roles.items():
            sizes = [pss_kib(pid) for root in roots for pid in process_tree(root, tree)]
            self.peak_total[role] = max(self.peak_total[role], sum(sizes))
            largest = max(sizes, default=0)
            self.peak_process[role] = max(self.peak_process[role], largest)

    def report(self):
        """role -> {"peak_pss_mib": ..., "largest_process_mib": ...}"""
        return {
            role: {
                "peak_pss_mib": round(self.peak_total[role] / 1024, 1),
                "largest_process_mib": round(self.peak_process[role] / 1024, 1),
            }
            for role in self.roles
        }
