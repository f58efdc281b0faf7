# EC2 launch details that moto 5.2.5 drops, restored in its EC2 backend so that ec2_gpu_fleet's volume
# options behave on the emulator as on AWS. server.py calls install() before it serves (see README.md here,
# "Extensions").
#
# What moto 5.2.5 does, and what this changes:
# - RunInstances reads Iops from each block device mapping but never hands it to the volume it creates, so
#   an io1/io2 (Provisioned IOPS) volume fails with "The parameter [VolumeType] requires the parameter Iops"
#   and a gp3 volume always gets 3000 IOPS. Here the mapping's Iops reaches the volume.
# - RunInstances drops Throughput from the mappings: here a gp3 volume gets the throughput asked for.
from __future__ import annotations

import threading
from typing import Any

_installed = False
_launch = threading.local()   # the block device mappings of the RunInstances call being served


def install() -> None:
    global _installed
    if _installed:
        return
    from moto.ec2.models.instances import Instance, InstanceBackend
    from moto.ec2.responses.instances import InstanceResponse

    parse_mappings = InstanceResponse._parse_block_device_mapping
    run_instances = InstanceBackend.run_instances

    def parse_with_throughput(self: Any) -> list[dict[str, Any]]:
        mappings = parse_mappings(self)
        raw = {m.get("DeviceName"): m.get("Ebs", {}) for m in self._get_param("BlockDeviceMappings", [])}
        for mapping in mappings:
            throughput = raw.get(mapping.get("DeviceName"), {}).get("Throughput")
            if throughput is not None:
                mapping["Ebs"]["Throughput"] = int(throughput)
        return mappings

    def run_instances_keeping_mappings(self: Any, *args: Any, **kwargs: Any) -> Any:
        _launch.mappings = {m["DeviceName"]: m.get("Ebs") or {} for m in kwargs.get("block_device_mappings") or []}
        try:
            return run_instances(self, *args, **kwargs)
        finally:
            _launch.mappings = {}

    def add_block_device(self: Any, size: int, device_path: str, snapshot_id: str | None, encrypted: bool,
                         delete_on_termination: bool, kms_key_id: str | None, volume_type: str | None) -> None:
        ebs = getattr(_launch, "mappings", {}).get(device_path, {})
        iops, throughput = ebs.get("Iops"), ebs.get("Throughput")
        volume = self.ec2_backend.create_volume(
            size=size, zone_name=self._placement.zone, snapshot_id=snapshot_id, encrypted=encrypted,
            kms_key_id=kms_key_id, volume_type=volume_type, iops=int(iops) if iops else None,
            throughput=int(throughput) if throughput else None)
        self.ec2_backend.attach_volume(volume.id, self.id, device_path, delete_on_termination)

    InstanceResponse._parse_block_device_mapping = parse_with_throughput
    InstanceBackend.run_instances = run_instances_keeping_mappings
    Instance.add_block_device = add_block_device
    _installed = True
