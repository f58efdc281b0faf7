"""The local test-host tool: real namespaces, overlays, loop devices and sshd, reached over SSH."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from testhosts.testhosts import ROOT, HostError, HostSpec, LocalHosts, VolumeSpec

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="test hosts need root (namespaces, mounts, loops)")

TOOL = ROOT / "tests" / "testhosts" / "testhosts.py"
STATE = ROOT / ".run" / "testhosts" / "pytest-testhosts"
SUBNET = "127.0.20"
VOLUME_ID = "vol-0a1b2c3d4e5f60718"


@pytest.fixture(scope="module")
def fleet():
    hosts = LocalHosts(STATE, SUBNET)
    hosts.destroy()
    specs = [
        HostSpec("legacy", "dlami-legacy-conda",
                 volumes=[VolumeSpec(id=VOLUME_ID, size="64M", device_name="/dev/sdf")]),
        HostSpec("venv", "dlami-venv", volumes=[VolumeSpec(size="64M", fstype="ext4", files={"keep/me.txt": "data"}),
                                                VolumeSpec(kind="instance-store", size="32M")]),
        HostSpec("plain", "bare"),
    ]
    created = hosts.create(specs)
    assert [h["created"] for h in created] == [True, True, True]
    yield hosts
    hosts.destroy()


def test_hosts_have_own_addresses_hostnames_and_key_only_sudo_login(fleet):
    listed = fleet.list()
    assert len({h["address"] for h in listed}) == 3
    assert all(h["address"].startswith(SUBNET + ".") for h in listed)
    assert oct(fleet.key.stat().st_mode & 0o777) == "0o600"
    for host in listed:
        out = fleet.ssh(host["name"], "hostname; id -un; sudo -n id -u").stdout.split()
        assert out == [host["name"], "ubuntu", "0"]
    password_try = subprocess.run(
        ["ssh", *fleet.ssh_options(), "-o", "PubkeyAuthentication=no", "-o", "PasswordAuthentication=yes",
         "-p", "22", f"ubuntu@{listed[0]['address']}", "true"], capture_output=True, text=True, timeout=30)
    assert password_try.returncode == 255
    assert "Permission denied" in password_try.stderr


def test_hosts_have_separate_filesystems(fleet):
    fleet.ssh("legacy", "sudo sh -c 'echo legacy > /etc/dlfleet-probe' && echo mine > ~/probe")
    assert fleet.ssh("legacy", "cat /etc/dlfleet-probe ~/probe").stdout.split() == ["legacy", "mine"]
    assert fleet.ssh("venv", "cat /etc/dlfleet-probe ~/probe", check=False).returncode != 0
    assert not Path("/etc/dlfleet-probe").exists()


def test_create_again_changes_nothing(fleet):
    again = fleet.create([HostSpec("plain", "bare")])
    assert again[0]["created"] is False
    with pytest.raises(HostError, match="another spec"):
        fleet.create([HostSpec("plain", "dlami-venv")])


def test_ebs_volume_by_id_link_and_device_name(fleet):
    vol = fleet.describe("legacy")["volumes"][0]
    assert vol["by_id"] == f"/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_{VOLUME_ID.replace('-', '')}"
    script = f"readlink -f {vol['by_id']}; readlink -f /dev/sdf; stat -c %t:%T /dev/nvme1n1"
    by_id, name, numbers = fleet.ssh("legacy", script).stdout.split()
    assert by_id == name == "/dev/nvme1n1"
    assert [int(x, 16) for x in numbers.split(":")] == [vol["major"], vol["minor"]]


def test_preformatted_volume_and_instance_store(fleet):
    ebs, store = fleet.describe("venv")["volumes"]
    assert store["by_id"].startswith("/dev/disk/by-id/nvme-Amazon_EC2_NVMe_Instance_Storage_AWS")
    out = fleet.ssh("venv", f"sudo blkid -o value -s TYPE {ebs['device']}; sudo mkdir -p /mnt/v; "
                            f"sudo mount {ebs['by_id']} /mnt/v; cat /mnt/v/keep/me.txt; echo; "
                            "findmnt -n -o TARGET /mnt/v")
    assert out.stdout.split() == ["ext4", "data", "/mnt/v"]
    assert "/mnt/v" not in Path("/proc/self/mountinfo").read_text()


def test_legacy_conda_profile_activates_and_creates_envs(fleet):
    env = fleet.describe("legacy")["env"]
    login = ("bash -lic 'source activate mxnet_p36 && echo $CONDA_DEFAULT_ENV && "
             "python -c \"import mxnet, sys; print(mxnet.__version__, sys.prefix)\"' 2>/dev/null")
    assert fleet.ssh("legacy", login).stdout.split() == ["mxnet_p36", "1.9.1", env["prefix"]]
    conda = f"{env['root']}/bin/conda"
    fleet.ssh("legacy", f"{conda} create -y -n scratch python=3.11 >/dev/null")
    envs = json.loads(fleet.ssh("legacy", f"{conda} env list --json").stdout)["envs"]
    assert f"{env['root']}/envs/scratch" in envs
    refused = fleet.ssh("legacy", f"{conda} create -y -n other numpy", check=False)
    assert refused.returncode == 1 and "pip install" in refused.stderr


def test_venv_profile_imports_mxnet(fleet):
    out = fleet.ssh("venv", "source /opt/mxnet/bin/activate && python -c 'import mxnet; print(mxnet.__version__)'")
    assert out.stdout.strip() == "1.9.1"
    assert fleet.ssh("plain", "test -e /opt/mxnet || test -e ~/anaconda3", check=False).returncode == 1


def test_cli_inventory_drives_ansible(fleet):
    inventory = STATE / "inventory.yml"
    proc = subprocess.run([str(Path(sys.executable).parent / "ansible"), "-i", str(inventory), "gpu_fleet", "-b",
                           "-m", "ansible.builtin.command", "-a", "cat /etc/hostname"],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("CHANGED") == 3
    listed = json.loads(subprocess.run([sys.executable, str(TOOL), "--state-dir", str(STATE), "list"],
                                       capture_output=True, text=True, check=True).stdout)
    assert sorted(h["name"] for h in listed) == ["legacy", "plain", "venv"]


def test_restart_after_a_crash_spares_a_namespace_that_reuses_its_numbers(tmp_path):
    """A crashed host's namespaces are gone and the kernel hands their inode numbers to new namespaces, such as
    another fleet's host started meanwhile (tests run in parallel). Starting the crashed host again, and looking
    for leftovers, must leave that other process alone: before, it was killed as the crashed host's."""
    hosts = LocalHosts(ROOT / ".run" / "testhosts" / "pytest-recycled", "127.0.21")
    hosts.destroy()
    bystander = subprocess.Popen(
        ["unshare", "--mount", "--pid", "--fork", "--kill-child", "--", sys.executable, "-c",
         "import time; time.sleep(300)", "_init", str(tmp_path / "other-fleet" / "boot.json")],
        start_new_session=True)
    try:
        assert hosts.create([HostSpec("crashed", "bare")])[0]["created"]
        state_path = hosts.host_dir("crashed") / "host.json"
        os.kill(json.loads(state_path.read_text())["init_pid"], signal.SIGKILL)
        for _ in range(100):
            if not hosts.running("crashed"):
                break
            time.sleep(0.05)
        else:
            pytest.fail("the crashed host's init is still there")
        inner = next(iter(_wait_for_child(bystander.pid)))
        reused = [os.readlink(f"/proc/{inner}/ns/{ns}") for ns in ("mnt", "pid")]
        state = json.loads(state_path.read_text())
        state_path.write_text(json.dumps({**state, "namespaces": reused}))   # as if the kernel reused them
        assert hosts.create([HostSpec("crashed", "bare")])[0]["created"]
        assert bystander.poll() is None and Path(f"/proc/{inner}").exists()
        assert hosts.ssh("crashed", "hostname").stdout.strip() == "crashed"
        assert hosts.leftovers(reused)["namespaces"] == []
    finally:
        try:
            hosts.destroy()
        finally:
            alive = bystander.poll() is None
            bystander.kill()
            bystander.wait(timeout=30)
    assert alive, "the other fleet's process was killed"


def _wait_for_child(pid: int) -> list[int]:
    for _ in range(200):
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        if kids:
            return [int(k) for k in kids]
        time.sleep(0.05)
    raise AssertionError(f"unshare {pid} started no child")


def test_bad_specs_are_refused_and_create_nothing():
    hosts = LocalHosts(ROOT / ".run" / "testhosts" / "pytest-bad", SUBNET)
    for spec, message in ((HostSpec("x1", "windows"), "profile 'windows' is unknown"),
                          (HostSpec("x1", "bare", address="10.0.0.5"), "not in 127.0.0.0/8"),
                          (HostSpec("x1", "bare", volumes=[VolumeSpec(id="vol-123")]), "17 hex"),
                          (HostSpec("Bad_Name"), "invalid")):
        with pytest.raises(HostError, match=message):
            hosts.create([spec])
    assert hosts.names() == []


def test_destroy_leaves_no_process_mount_loop_or_namespace(fleet):
    fleet.ssh("venv", "sudo mkdir -p /data && sudo mount /dev/nvme1n1 /data && (nohup sleep 600 >/dev/null 2>&1 &)")
    namespaces = fleet.namespaces()
    assert len(namespaces) == 12
    loops = [v["loop"] for h in fleet.list() for v in h["volumes"]]
    before = fleet.leftovers(namespaces)
    assert before["processes"] and before["namespaces"]  # the hosts are there before, and are seen
    assert fleet.destroy() == ["legacy", "plain", "venv"]
    assert fleet.leftovers(namespaces) == {"processes": [], "mounts": [], "loops": [], "namespaces": []}
    for loop in loops:
        backing = Path(f"/sys/block/{Path(loop).name}/loop/backing_file")
        assert not backing.exists() or str(STATE) not in backing.read_text()
    assert not STATE.exists()
    assert fleet.destroy() == []
