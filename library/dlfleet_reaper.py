#!/usr/bin/python
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
module: dlfleet_reaper
short_description: Remove dlfleet resources of a fleet, or those that outlived their dlfleet:ttl tag
version_added: "1.0.0"
description:
  - Finds every resource tagged C(dlfleet:fleet) (EC2 instances, EBS volumes, key pairs, security groups,
    SageMaker tuning and training jobs (stopped while they run), endpoints, endpoint configs and models), with
    one tag-filtered, paginated Describe/List per resource type.
  - With O(expired_only=true) (the reaper) it removes those whose age, from their own creation time, exceeds
    their C(dlfleet:ttl) tag (C(30m), C(8h), C(2d)). With O(expired_only=false) and O(fleet) (teardown) it
    removes everything of that fleet.
  - Security groups carry no creation time; one goes once no live instance and no unexpired key pair of its
    fleet stays. Training and tuning jobs cannot be deleted; InProgress ones are stopped. A job already Stopping
    still bills, so it is waited for like them, but it is no change of the module's and is not listed as removed.
  - Issues every stop, delete and terminate call first (endpoints before their configs and models), then waits
    for jobs, endpoints and instances together within one O(wait_timeout), then deletes the volumes and security
    groups the terminated instances held.
  - In check mode it lists what would go and changes nothing.
options:
  fleet:
    description: Only resources of this fleet (value of the C(dlfleet:fleet) tag).
    type: str
  expired_only:
    description: Remove only what outlived its C(dlfleet:ttl). V(false) needs O(fleet) or O(all_fleets).
    type: bool
    default: true
  all_fleets:
    description: Allow O(expired_only=false) without O(fleet), removing every dlfleet resource in the region.
    type: bool
    default: false
  resource_types:
    description: Which kinds of resource to consider.
    type: list
    elements: str
    choices: [instances, volumes, key_pairs, security_groups, sagemaker_tuning_jobs, sagemaker_training_jobs,
              sagemaker_endpoints, sagemaker_endpoint_configs, sagemaker_models]
    default: [instances, volumes, key_pairs, security_groups, sagemaker_tuning_jobs, sagemaker_training_jobs,
              sagemaker_endpoints, sagemaker_endpoint_configs, sagemaker_models]
  now:
    description: Judge ages as of this ISO 8601 time instead of the current time (what would go at that time).
    type: str
  wait:
    description:
      - Wait for terminated instances to be gone before deleting their volumes and groups.
      - Wait until stopped SageMaker jobs have ended (Stopped, Completed or Failed) and deleted endpoints are gone,
        so that RV(remaining) lists what still bills.
    type: bool
    default: true
  wait_timeout:
    description:
      - Seconds to wait for all of it together (instances, jobs and endpoints), not for each.
      - What has not ended by then is listed in RV(remaining) with its state, with a warning; the module does not
        fail for it.
    type: int
    default: 600
attributes:
  check_mode:
    support: full
    details: Lists what would be removed, and removes nothing.
  diff_mode:
    support: none
  platform:
    platforms: aws
    details: Runs on the controller and acts through the AWS APIs (or the endpoint O(endpoint_url) names).
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - amazon.aws.common.modules
  - amazon.aws.region.modules
  - amazon.aws.boto3
author:
  - dlfleet maintainers (@dlfleet)
"""

EXAMPLES = r"""
- name: Remove whatever outlived its TTL (run from cron)
  dlfleet_reaper:
    region: us-east-1

- name: List what would go at 18:00 UTC, changing nothing
  dlfleet_reaper:
    now: "2026-11-26T18:00:00Z"
  check_mode: true

- name: Tear down every resource of one fleet
  dlfleet_reaper:
    fleet: cifar10-a
    expired_only: false
"""

RETURN = r"""
removed:
  description: What was removed, or in check mode what would be.
  returned: always
  type: list
  elements: dict
  contains:
    type: {description: Resource kind, type: str, sample: instances}
    id: {description: Id or name, type: str, sample: i-0123456789abcdef0}
    fleet: {description: Its dlfleet:fleet tag, type: str, sample: cifar10-a}
    created: {description: Creation time (empty for security groups), type: str}
    age_seconds: {description: "Age at O(now), -1 when unknown.", type: int}
    ttl: {description: Its dlfleet:ttl tag, type: str, sample: 8h}
    expired: {description: Whether it outlived its ttl, type: bool}
    state: {description: Its state when found, type: str}
    region: {description: The region it is in (the module's O(region)), type: str, sample: us-east-1}
ttl_unreadable:
  description:
    - Resources kept because their C(dlfleet:ttl) is missing or not a duration (C(8 hours), C(-1h)); the reaper
      never removes them by age, and warns about them.
  returned: always
  type: list
  elements: dict
remaining:
  description:
    - dlfleet-tagged resources (of O(fleet) when given) still there afterwards.
    - Finished training and tuning jobs (Completed, Failed, Stopped) are not listed; SageMaker keeps them and has
      no call to delete them. An InProgress or Stopping job is listed, as it still bills.
    - What the wait left unfinished after O(wait_timeout) is listed in its last state (a job C(Stopping), an
      endpoint C(Deleting), an instance C(shutting-down)), with the volumes and group an instance still holds.
  returned: always
  type: list
  elements: dict
"""

from ansible.module_utils.dlfleet_aws import AWS_ERRORS, DlfleetError, check_fleet_name, client, fail_on_unknown_region
from ansible.module_utils.dlfleet_cleanup import (
    ALL_TYPES,
    SAGEMAKER_TYPES,
    as_dicts,
    find_ec2,
    find_sagemaker,
    lingering,
    parse_now,
    remove,
    select,
    stopping,
    ttl_unreadable,
    with_unfinished,
)
from ansible_collections.amazon.aws.plugins.module_utils.modules import AnsibleAWSModule


def find_all(ec2, sm, params, now):
    types = params["resource_types"]
    found = find_ec2(ec2, params["fleet"], now, types)
    if any(t in SAGEMAKER_TYPES for t in types):
        found += find_sagemaker(sm, params["fleet"], now, types)
    return found


def main():
    argument_spec = dict(
        fleet=dict(type="str"),
        expired_only=dict(type="bool", default=True),
        all_fleets=dict(type="bool", default=False),
        resource_types=dict(type="list", elements="str", choices=list(ALL_TYPES), default=list(ALL_TYPES)),
        now=dict(type="str"),
        wait=dict(type="bool", default=True),
        wait_timeout=dict(type="int", default=600),
    )
    module = AnsibleAWSModule(argument_spec=argument_spec, supports_check_mode=True)
    params = module.params
    fail_on_unknown_region(module)
    if params["fleet"]:   # an empty one is the all-fleets guard's business, below
        try:
            check_fleet_name(params["fleet"])
        except ValueError as err:
            module.fail_json(msg=str(err))
    if not params["expired_only"] and not params["fleet"] and not params["all_fleets"]:
        module.fail_json(msg="expired_only=false would remove every dlfleet resource in the region; "
                             "name the fleet to tear down with fleet=NAME, or set all_fleets=true if that is meant")
    try:
        now = parse_now(params["now"])
    except ValueError:
        module.fail_json(msg=f"now={params['now']!r} is not an ISO 8601 time; use for example 2026-11-26T18:00:00Z")
    ec2 = client(module, "ec2")
    sm = client(module, "sagemaker") if any(t in SAGEMAKER_TYPES for t in params["resource_types"]) else None
    try:
        found = find_all(ec2, sm, params, now)
        chosen = select(found, params["expired_only"])
        waiting = stopping(found, params["expired_only"])
        unfinished = []
        if (chosen or waiting) and not module.check_mode:
            unfinished = remove(ec2, sm, chosen, params["wait"], params["wait_timeout"], waiting)
            remaining = with_unfinished(lingering(find_all(ec2, sm, params, now)), unfinished)
        else:
            remaining = lingering([r for r in found if r not in chosen])
    except (DlfleetError, *AWS_ERRORS) as err:  # AWS errors only; a wait that runs out is no error (see remaining)
        module.fail_json_aws(err, msg="Could not reap dlfleet resources")
    if unfinished:
        module.warn(f"Still not ended after wait_timeout={params['wait_timeout']} s (they are listed in remaining; "
                    "run again later): " + ", ".join(f"{r.type} {r.id} ({r.state})" for r in unfinished))
    unreadable = ttl_unreadable([r for r in found if r not in chosen])
    if unreadable and params["expired_only"]:
        module.warn(f"{len(unreadable)} dlfleet resource(s) have a missing or malformed dlfleet:ttl and are never "
                    f"reaped by age: " + ", ".join(f"{r.type} {r.id} (fleet {r.fleet or '?'}, ttl {r.ttl!r})"
                                                   for r in unreadable[:20])
                    + "; tag them with a duration such as 8h, or tear their fleet down")
    region = module.region
    module.exit_json(changed=bool(chosen), removed=as_dicts(chosen, region), remaining=as_dicts(remaining, region),
                     ttl_unreadable=as_dicts(unreadable, region))


if __name__ == "__main__":
    main()
