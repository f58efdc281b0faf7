"""Ansible's internal poll interval: the project's value (ansible.cfg) against ansible-core's default, 0.001 s.

While a task runs, the `ansible-playbook` main process asks its workers for results every `internal_poll_interval`
seconds (ansible-core's strategy loop: look for dead workers, read the result queue, sleep). At the default that is
1,000 wake-ups a second for as long as any task runs: CPU taken from the modules, the trainers and the emulator
on a small controller. A longer interval costs latency instead: up to one interval more per task result.

Two playbooks on localhost, each run ROUNDS times with each value, alternating in this one process:
- waiting: three tasks that each wait 5 s (a long module run, a job followed to its end);
- quick: 60 short tasks (30 `command`, 30 `set_fact`), where the latency shows if anywhere.
Each run's CPU is the ansible-playbook process tree's (user + system, from the children's rusage), its wall the
whole command's. The only difference between the sides is the one ini key, in an ansible.cfg of their own.

Writes RESULTS.md next to this file: per-run figures, the medians and their ratios (project / default).

    .venv/bin/python benchmarks/internal_poll/run.py [--rounds 3]
"""
from __future__ import annotations

import argparse
import configparser
import datetime as dt
import os
import platform
import resource
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
BIN = ROOT / ".venv" / "bin"
DEFAULT = 0.001   # ansible-core's (config/base.yml, DEFAULT_INTERNAL_POLL_INTERVAL)

def play(name: str, tasks: str) -> str:
    """A localhost play, run by the controller venv's own Python."""
    return f"""- name: {name}
  hosts: localhost
  connection: local
  gather_facts: false
  vars:
    ansible_python_interpreter: "{{{{ ansible_playbook_python }}}}"
  tasks:
{tasks}"""


WAITING = play("Waiting", "".join(f"""    - name: Wait {i}
      ansible.builtin.command: sleep 5
      changed_when: false
""" for i in range(3)))

QUICK = play("Quick tasks", "".join(f"""    - name: Command {i}
      ansible.builtin.command: "true"
      changed_when: false
    - name: Fact {i}
      ansible.builtin.set_fact:
        fact_{i}: {i}
""" for i in range(30)))


def project_interval() -> float:
    config = configparser.ConfigParser()
    config.read(ROOT / "ansible.cfg")
    return config.getfloat("defaults", "internal_poll_interval", fallback=DEFAULT)


def run_once(playbook: Path, cfg: Path) -> tuple[float, float]:
    env = {**os.environ, "ANSIBLE_CONFIG": str(cfg), "ANSIBLE_LOCALHOST_WARNING": "false"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.monotonic()
    subprocess.run([str(BIN / "ansible-playbook"), "-i", "localhost,", str(playbook)], env=env, check=True,
                   stdout=subprocess.DEVNULL)
    wall = time.monotonic() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    ours = project_interval()
    if ours == DEFAULT:
        raise SystemExit("ansible.cfg sets no internal_poll_interval other than the default: nothing to compare")
    sides = {"default": DEFAULT, "project": ours}
    rows: dict[str, dict[str, list[tuple[float, float]]]] = {w: {s: [] for s in sides} for w in ("waiting", "quick")}
    with tempfile.TemporaryDirectory() as tmp:
        books = {"waiting": Path(tmp, "waiting.yml"), "quick": Path(tmp, "quick.yml")}
        books["waiting"].write_text(WAITING)
        books["quick"].write_text(QUICK)
        cfgs = {}
        for side, value in sides.items():
            cfgs[side] = Path(tmp, f"{side}.cfg")
            cfgs[side].write_text(f"[defaults]\ninternal_poll_interval = {value}\nretry_files_enabled = false\n")
        run_once(books["quick"], cfgs["project"])   # warm-up: the page cache, the venv's bytecode
        for _ in range(args.rounds):
            for workload, book in books.items():
                for side in sides:
                    rows[workload][side].append(run_once(book, cfgs[side]))
    write_results(rows, sides, args.rounds)


def write_results(rows, sides, rounds: int) -> None:
    version = subprocess.run([str(BIN / "ansible-playbook"), "--version"], capture_output=True, text=True,
                             check=True).stdout.splitlines()[0]
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"# `internal_poll_interval`: {sides['project']} s (ansible.cfg) against ansible-core's {DEFAULT} s", "",
             f"Measured {now} by `benchmarks/internal_poll/run.py`: two localhost playbooks, {rounds} rounds, "
             "the two values alternating in one process (CPU: the ansible-playbook process tree).", ""]
    summary = []
    for workload, by_side in rows.items():
        lines += [f"## {workload}", "", "| round | default: CPU-s | wall s | project: CPU-s | wall s |",
                  "|---|---|---|---|---|"]
        for i in range(rounds):
            d, p = by_side["default"][i], by_side["project"][i]
            lines.append(f"| {i + 1} | {d[0]:.2f} | {d[1]:.2f} | {p[0]:.2f} | {p[1]:.2f} |")
        med = {s: (statistics.median(c for c, _ in v), statistics.median(w for _, w in v)) for s, v in by_side.items()}
        lines += [f"| median | {med['default'][0]:.2f} | {med['default'][1]:.2f} | {med['project'][0]:.2f} | "
                  f"{med['project'][1]:.2f} |", ""]
        summary.append(f"- {workload}: CPU, project / default: **{med['project'][0] / med['default'][0]:.2f}**; "
                       f"wall: **{med['project'][1] / med['default'][1]:.2f}**.")
    lines += [*summary, "", f"Machine: {os.cpu_count()} logical CPUs; Linux {platform.release()}; Python "
                        f"{platform.python_version()}; {version}. The box is shared: compare the two columns of one "
                        "round, not runs of other days.", ""]
    (HERE / "RESULTS.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
