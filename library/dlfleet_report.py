#!/usr/bin/python
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
module: dlfleet_report
short_description: Write a run's report.md from its artifacts
version_added: "1.0.0"
description:
  - Reads what a dlfleet run left in its artifacts directory (C(fleet.json), C(<host>/host.json),
    C(<host>/metrics.jsonl) and C(curves.png), C(sagemaker/*.json), C(teardown.json)) and writes C(report.md), with
    the fleet and its GPU facts, the quota headroom, the cost estimate against the actual instance-hours,
    the training curves and figures per host, the SageMaker job and endpoint predictions, and what teardown left.
  - Runs on the controller and makes no AWS call. Changed only when the report's text changes.
options:
  artifacts_dir:
    description: The run's artifacts directory, C(artifacts/<run>).
    type: path
    required: true
  dest:
    description: Where to write the report. Defaults to C(<artifacts_dir>/report.md).
    type: path
  latest_link:
    description: Also point C(<artifacts_dir>/../latest) at this run.
    type: bool
    default: true
author:
  - dlfleet maintainers (@dlfleet)
attributes:
  check_mode:
    support: full
    details: Reports whether the report would change, and writes nothing.
  diff_mode:
    support: full
  platform:
    platforms: posix
    details: Runs on the controller, on its files.
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
"""

EXAMPLES = r"""
- name: Write the run report
  dlfleet_report:
    artifacts_dir: "{{ dlfleet_artifacts_dir }}"
"""

RETURN = r"""
path:
  description: The report's path.
  returned: always
  type: str
summary:
  description: Key figures of the report.
  returned: always
  type: dict
  contains:
    hosts: {description: Hosts with training results or host facts, type: list, elements: str}
    instances: {description: Instances in fleet.json, type: int}
    torn_down: {description: Whether teardown has run, type: bool}
    left_behind: {description: Resources teardown left tagged with the fleet, type: int}
    endpoint_accuracy: {description: Endpoint accuracy on held-out images, type: float}
"""

import os
from pathlib import Path

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.dlfleet_report import render


def link_latest(artifacts: Path, check_mode: bool) -> bool:
    link = artifacts.parent / "latest"
    if link.is_symlink() and os.readlink(link) == artifacts.name:
        return False
    if not check_mode:
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(artifacts.name)
    return True


def main():
    module = AnsibleModule(
        argument_spec=dict(
            artifacts_dir=dict(type="path", required=True),
            dest=dict(type="path"),
            latest_link=dict(type="bool", default=True),
        ),
        supports_check_mode=True,
    )
    artifacts = Path(module.params["artifacts_dir"])
    if not artifacts.is_dir():
        module.fail_json(msg=f"artifacts_dir {artifacts} does not exist; run the provision play first "
                             "(it creates artifacts/<run>/), or pass the directory of an existing run")
    dest = Path(module.params["dest"] or artifacts / "report.md")
    text, summary = render(artifacts)
    before = dest.read_text() if dest.exists() else ""
    changed = text != before
    if changed and not module.check_mode:
        tmp = dest.with_suffix(".md.tmp")
        tmp.write_text(text)
        os.chmod(tmp, 0o644)
        tmp.replace(dest)
    if module.params["latest_link"]:
        changed = link_latest(artifacts, module.check_mode) or changed
    result = dict(changed=changed, path=str(dest), summary=summary)
    if module._diff:
        result["diff"] = {"before": before, "after": text, "before_header": str(dest), "after_header": str(dest)}
    module.exit_json(**result)


if __name__ == "__main__":
    main()
