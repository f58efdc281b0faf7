#!/usr/bin/python
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# Documentation only: the work is done by the action plugin of the same name (roles/mxnet_train/action_plugins).

DOCUMENTATION = r"""
module: mxnet_train_follow
short_description: Follow a host's training processes until every one has ended
version_added: "1.0.0"
description:
  - Round after round, calls M(mxnet_train_progress) on the host (one remote call per round), prints the new log
    lines as they come, and reads the exit status of each process that ended from its async job.
  - A process that failed fails the task on its host and, through a stop file on the controller, stops the
    follow on every other host of the play at its next round.
  - One task however long the training runs; the result keeps only line counts and the last 50 lines.
options:
  pid_dir:
    description: Directory of the processes' pid files on the host.
    type: path
    required: true
  jobs:
    description: Async job id of each process, by process name (the processes to follow).
    type: dict
    required: true
  logs:
    description: Logs to print, by name.
    type: dict
    default: {}
  shown:
    description: Lines of each log already shown, by name.
    type: dict
    default: {}
  follow:
    description: Name (in O(logs)) of the log whose next line ends a round early.
    type: str
  interval:
    description: Longest round, in seconds.
    type: int
    default: 30
  run:
    description: Name of the run (names the stop file).
    type: str
  max_seconds:
    description: Fail when processes still run after this many seconds (0, no limit).
    type: int
    default: 0
attributes:
  action:
    support: full
  async:
    support: none
  bypass_host_loop:
    support: none
  check_mode:
    support: none
    details: The role does not start training in check mode, so there is nothing to follow.
  diff_mode:
    support: none
    details: Follows only; there is never a change to show.
  platform:
    platforms: posix
    details: The action plugin runs on the controller and calls M(mxnet_train_progress) on the host.
author:
  - dlfleet maintainers (@dlfleet)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - ansible.builtin.action_common_attributes.flow
"""

EXAMPLES = r"""
- name: Follow the training until every process has ended
  mxnet_train_follow:
    pid_dir: /home/ubuntu/dlfleet/runs/cifar/pids
    jobs: {train: "j123456789.1234"}
    logs: {train: /home/ubuntu/dlfleet/runs/cifar/logs/train.log}
    follow: train
    interval: 30
    run: cifar
"""

RETURN = r"""
rounds:
  description: Rounds taken (one remote call each).
  returned: always
  type: int
shown:
  description: Lines of each log shown by the end.
  returned: always
  type: dict
tail:
  description: The last 50 log lines shown.
  returned: always
  type: list
  elements: str
failed_processes:
  description: Processes that ended with an error, with their exit code and message.
  returned: always
  type: list
  elements: dict
"""
