#!/usr/bin/env python3
"""Local test hosts: isolated Linux hosts on this machine, reached over SSH like EC2 instances.

Each host is a set of Linux namespaces (mount, PID, UTS, IPC) around an overlay of this machine's own
root filesystem, with a per-profile image layer (the DLAMI layout) in between and a per-host upper
layer on top. sshd runs inside on a loopback address of its own (127.0.0.0/8), user `ubuntu` has
passwordless sudo and logs in with a generated key only. Loop devices stand in for EBS volumes and
instance-store disks: the host's /dev holds `nvmeXn1` nodes and the `/dev/disk/by-id/` links that
AWS's NVMe devices have.

Needs root, util-linux (unshare, losetup, pivot_root), openssh-server and mount. Standard library only.
Run `testhosts.py --help`; README.md beside this file documents the CLI, the JSON and the profiles.
"""
from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

TOOL_VERSION = "1"
ROOT = Path(__file__).resolve().parents[2]
RUN_ROOT = ROOT / ".run" / "testhosts"
DEFAULT_STATE_DIR = RUN_ROOT / "default"
IMAGES_DIR = Path(os.environ.get("DLFLEET_TESTHOSTS_IMAGES", RUN_ROOT / "images"))
TRAIN_VENV = Path(os.environ.get("DLFLEET_TRAIN_VENV", ROOT / ".venv-train"))
DEFAULT_SUBNET = "127.0.10"
USER = "ubuntu"
HOST_PYTHON = "/usr/bin/python3"
EBS_BY_ID = "nvme-Amazon_Elastic_Block_Store_"
INSTANCE_STORE_BY_ID = "nvme-Amazon_EC2_NVMe_Instance_Storage_"
NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,30}$")
VOLUME_ID_RE = re.compile(r"^vol-[0-9a-f]{17}$")
SIZE_RE = re.compile(r"^(\d+)([KMG]?)$")
PY_VERSION = f"python{sys.version_info.major}.{sys.version_info.minor}"

# Image profiles: the published DLAMI layouts. Each is built once into a cached image layer.
PROFILES: dict[str, dict[str, Any]] = {
    "bare": {
        "description": "Ubuntu-like host: user ubuntu with passwordless sudo, system python3, no ML env.",
        "env": None,
    },
    "dlami-legacy-conda": {
        "description": "Legacy Conda-based DLAMI: /home/ubuntu/anaconda3 with `conda` and "
        "envs/mxnet_p36 holding MXNet; activation by `source activate mxnet_p36`.",
        "env": {"kind": "conda", "name": "mxnet_p36", "root": "/home/ubuntu/anaconda3",
                "prefix": "/home/ubuntu/anaconda3/envs/mxnet_p36"},
    },
    "dlami-venv": {
        "description": "Current DLAMI layout: the framework in a root-owned venv under /opt/<framework> "
        "(here /opt/mxnet); activation by `source /opt/mxnet/bin/activate`.",
        "env": {"kind": "venv", "name": "mxnet", "root": "/opt", "prefix": "/opt/mxnet"},
    },
}


MOLECULE_PLATFORM_KEYS = {"groups", "children", "hostname"}


class HostError(RuntimeError):
    """A test host could not be created, found or destroyed; the message says why."""


# --------------------------------------------------------------------------------------------- specs
@dataclass
class VolumeSpec:
    kind: str = "ebs"               # "ebs" or "instance-store"
    size: str = "256M"              # sparse file size: N, NK, NM or NG
    id: str | None = None           # vol-<17 hex> for EBS; derived from the host name when unset
    by_id: bool = True              # create the /dev/disk/by-id link (False: only the device name)
    device_name: str | None = None  # extra /dev/<name> link, as amazon-ec2-utils makes (e.g. /dev/sdf)
    fstype: str | None = None       # pre-format the volume (a volume that already holds data)
    files: dict[str, str] = field(default_factory=dict)  # files written onto a pre-formatted volume


@dataclass
class HostSpec:
    name: str
    profile: str = "bare"
    address: str | None = None
    port: int = 22
    volumes: list[VolumeSpec] = field(default_factory=list)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HostSpec:
        # a molecule platform is a spec too: `ebs_volumes` there (molecule's `volumes` means docker's),
        # and molecule's inventory keys are left to molecule
        data = {k: v for k, v in data.items() if k not in MOLECULE_PLATFORM_KEYS}
        known = {"name", "profile", "address", "port", "volumes", "ebs_volumes", "instance_store"}
        unknown = set(data) - known
        if unknown:
            raise HostError(f"host {data.get('name')!r}: unknown keys {sorted(unknown)}; known: {sorted(known)}")
        vols = [VolumeSpec(**v) for v in data.get("volumes", []) + data.get("ebs_volumes", [])]
        vols += [VolumeSpec(kind="instance-store", **v) for v in data.get("instance_store", [])]
        return cls(name=data["name"], profile=data.get("profile", "bare"), address=data.get("address"),
                   port=int(data.get("port", 22)), volumes=vols)

    def validate(self) -> None:
        if not NAME_RE.match(self.name):
            raise HostError(f"host name {self.name!r} is invalid: use lower-case letters, digits and '-'")
        if self.profile not in PROFILES:
            raise HostError(f"host {self.name}: profile {self.profile!r} is unknown; use one of {sorted(PROFILES)}")
        if self.address is not None and not _is_loopback(self.address):
            raise HostError(f"host {self.name}: address {self.address!r} is not in 127.0.0.0/8")
        for vol in self.volumes:
            if vol.kind not in ("ebs", "instance-store"):
                raise HostError(f"host {self.name}: volume kind {vol.kind!r} must be ebs or instance-store")
            if not SIZE_RE.match(vol.size):
                raise HostError(f"host {self.name}: volume size {vol.size!r} must look like 256M or 1G")
            if vol.id is not None and vol.kind == "ebs" and not VOLUME_ID_RE.match(vol.id):
                raise HostError(f"host {self.name}: volume id {vol.id!r} must be vol- and 17 hex digits")


def _is_loopback(address: str) -> bool:
    parts = address.split(".")
    return len(parts) == 4 and parts[0] == "127" and all(p.isdigit() and 0 <= int(p) <= 255 for p in parts)


def _size_bytes(size: str) -> int:
    num, unit = SIZE_RE.match(size).groups()  # type: ignore[union-attr]
    return int(num) * {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3}[unit]


# --------------------------------------------------------------------------------------------- helpers
def _run(cmd: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if proc.returncode != 0:
        detail = (proc.stderr.strip() or proc.stdout.strip()).splitlines()[:3]
        raise HostError(f"{' '.join(cmd)} failed ({proc.returncode}): {' / '.join(detail)}")
    return proc


def _pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text(errors="replace").rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _ns_inode(pid: int, ns: str) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/{ns}")
    except OSError:
        return None


def _starttime(pid: int) -> int | None:
    """When `pid` started (clock ticks since boot): with the pid, a process's identity (pids are reused)."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text(errors="replace").rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def _mounts_mention(pid: int, marker: str) -> bool:
    """Whether `pid`'s mount table names `marker`. A host's mount namespace always names its state dir (the overlay's
    upper and work directories, the tmpfs masking the state dir), whatever its namespace ids; another process's
    namespace that was handed a freed id does not."""
    try:
        return marker in Path(f"/proc/{pid}/mountinfo").read_text(errors="replace")
    except OSError:
        return False


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _loops_backed_by(directory: Path) -> dict[str, str]:
    """Loop devices (name -> backing file) whose backing file lies under `directory`."""
    found = {}
    prefix = str(directory.resolve()) + "/"
    for loop in Path("/sys/block").glob("loop*"):
        try:
            backing = (loop / "loop" / "backing_file").read_text().strip()
        except OSError:
            continue
        if backing.startswith(prefix):
            found[loop.name] = backing.removesuffix(" (deleted)")
    return found


def _ssh_ready(address: str, port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((address, port), timeout=2) as sock:
                if sock.recv(64).startswith(b"SSH-"):
                    return True
        except OSError:
            pass
        time.sleep(0.2)
    return False


def _port_free(address: str, port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((address, port))
        except OSError:
            return False
    return True


@contextlib.contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)


# --------------------------------------------------------------------------------------------- images
def _train_site_packages() -> Path:
    found = sorted((TRAIN_VENV / "lib").glob("python3*/site-packages"))
    if not found or not (found[0] / "mxnet").is_dir():
        raise HostError(f"the training venv {TRAIN_VENV} has no mxnet; run `make venv` first")
    return found[0]


def image_key(profile: str) -> str:
    """A cache key for a profile's image: changes with this tool, the profile, and the training venv."""
    digest = hashlib.sha256(f"{TOOL_VERSION}:{profile}:{json.dumps(PROFILES[profile], sort_keys=True)}".encode())
    digest.update(Path(__file__).read_bytes())
    if PROFILES[profile]["env"]:
        digest.update("\n".join(sorted(p.name for p in _train_site_packages().iterdir())).encode())
    return f"{profile}-{digest.hexdigest()[:12]}"


def ensure_image(profile: str) -> Path:
    """Build (once) and return the image layer directory of `profile`."""
    key = image_key(profile)
    layer = IMAGES_DIR / key
    with _locked(IMAGES_DIR / ".lock"):
        if (layer / ".complete").exists():
            return layer / "layer"
        if layer.exists():
            shutil.rmtree(layer)
        (layer / "layer").mkdir(parents=True)
        (layer / "work").mkdir()
        (layer / "merged").mkdir()
        spec = {"profile": profile, "layer": str(layer / "layer"), "work": str(layer / "work"),
                "merged": str(layer / "merged")}
        _write_json(layer / "build.json", spec)
        proc = subprocess.run(["unshare", "--mount", "--propagation", "private", "--",
                               sys.executable, __file__, "_build", str(layer / "build.json")],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise HostError(f"building image {profile} failed:\n{proc.stdout}\n{proc.stderr}")
        env = PROFILES[profile]["env"]
        if env:
            _link_packages(layer / "layer", env["prefix"])
        shutil.rmtree(layer / "work", ignore_errors=True)
        (layer / ".complete").write_text(key + "\n")
        return layer / "layer"


def _link_packages(layer: Path, prefix: str) -> None:
    """Install the training venv's distributions into the image's env as hard links (same files, no download)."""
    source = _train_site_packages()
    target = layer / prefix.lstrip("/") / "lib" / source.parent.name / "site-packages"
    target.mkdir(parents=True, exist_ok=True)
    for item in source.iterdir():
        if item.name == "__pycache__":
            continue
        cmd = ["cp", "-al", str(item), str(target / item.name)]
        if subprocess.run(cmd, capture_output=True).returncode != 0:
            _run(["cp", "-a", str(item), str(target / item.name)])


def _build_inside(spec_path: str) -> None:
    """Runs in a private mount namespace: lays out a profile into the image layer through an overlay."""
    spec = json.loads(Path(spec_path).read_text())
    merged = Path(spec["merged"])
    _run(["mount", "-t", "overlay", "overlay", "-o",
          f"lowerdir=/,upperdir={spec['layer']},workdir={spec['work']}", str(merged)])
    for sub in ("proc", "dev", "sys"):
        _run(["mount", "--rbind", f"/{sub}", str(merged / sub)])
        _run(["mount", "--make-rslave", str(merged / sub)])
    for path in ("tmp", "run"):
        _run(["mount", "-t", "tmpfs", "tmpfs", str(merged / path)])

    def chroot(*cmd: str) -> None:
        _run(["chroot", str(merged), *cmd])

    if subprocess.run(["chroot", str(merged), "id", USER], capture_output=True).returncode != 0:
        chroot("useradd", "--create-home", "--shell", "/bin/bash", "--user-group",
               "--groups", "sudo,adm", USER)
    chroot("usermod", "--password", "*", USER)  # no password, yet not locked: key-only SSH login
    sudoers = merged / "etc/sudoers.d/90-cloud-init-users"
    sudoers.write_text(f"# Created by cloud-init on an EC2 image: passwordless sudo for the default user\n"
                       f"{USER} ALL=(ALL) NOPASSWD:ALL\n")
    sudoers.chmod(0o440)
    profile = PROFILES[spec["profile"]]
    env = profile["env"]
    (merged / "etc/dlfleet-testhost-profile").write_text(json.dumps({"profile": spec["profile"], **profile}) + "\n")
    if env is None:
        return
    uid, gid = _uid_gid(merged, USER)
    if env["kind"] == "venv":
        chroot(HOST_PYTHON, "-m", "venv", "--without-pip", env["prefix"])
        _pip_wrappers(merged, env["prefix"])
        return
    conda_root = env["root"]
    chroot(HOST_PYTHON, "-m", "venv", "--without-pip", conda_root)
    chroot(HOST_PYTHON, "-m", "venv", "--without-pip", env["prefix"])
    _pip_wrappers(merged, env["prefix"])
    _conda_layout(merged, conda_root, [env["name"]])
    bashrc = merged / "home" / USER / ".bashrc"
    bashrc.write_text(bashrc.read_text() + "\n# added by Anaconda3 installer\n"
                      f'export PATH="{conda_root}/bin:$PATH"\n')
    chroot("chown", "-R", f"{uid}:{gid}", conda_root, f"/home/{USER}/.bashrc")


def _uid_gid(root: Path, user: str) -> tuple[int, int]:
    for line in (root / "etc/passwd").read_text().splitlines():
        parts = line.split(":")
        if parts[0] == user:
            return int(parts[2]), int(parts[3])
    raise HostError(f"user {user} missing in {root}/etc/passwd")


def _pip_wrappers(merged: Path, prefix: str) -> None:
    for name in ("pip", "pip3"):
        path = merged / prefix.lstrip("/") / "bin" / name
        path.write_text(f"#!{prefix}/bin/python\nimport sys\nfrom pip._internal.cli.main import main\n"
                        "sys.exit(main())\n")
        path.chmod(0o755)


def _conda_layout(merged: Path, conda_root: str, envs: list[str]) -> None:
    """The conda installation of the legacy DLAMI, reproduced with venvs (see conda_shim.py)."""
    base = merged / conda_root.lstrip("/")
    shim = Path(__file__).with_name("conda_shim.py").read_text()
    conda = base / "bin" / "conda"
    conda.write_text(f"#!{conda_root}/bin/python\n" + shim)
    conda.chmod(0o755)
    (base / "etc" / "profile.d").mkdir(parents=True, exist_ok=True)
    (base / "etc" / "profile.d" / "conda.sh").write_text(CONDA_SH.replace("@ROOT@", conda_root))
    (base / "bin" / "activate").write_text(ACTIVATE_SH.replace("@ROOT@", conda_root).replace("@CMD@", "activate"))
    (base / "bin" / "deactivate").write_text(ACTIVATE_SH.replace("@ROOT@", conda_root).replace("@CMD@", "deactivate"))
    for sub in ("activate", "deactivate"):
        (base / "bin" / sub).chmod(0o755)
    (base / "conda-meta").mkdir(exist_ok=True)
    (base / "conda-meta" / "history").write_text("==> base environment (dlfleet test image) <==\n")
    for env in envs:
        meta = base / "envs" / env / "conda-meta"
        meta.mkdir(parents=True, exist_ok=True)
        (meta / "history").write_text(f"==> conda create -n {env} (dlfleet test image) <==\n")


CONDA_SH = """\
# conda's shell integration (etc/profile.d/conda.sh), for the test image's conda
export CONDA_EXE='@ROOT@/bin/conda'
export _CE_CONDA=''
export CONDA_PYTHON_EXE='@ROOT@/bin/python'
conda() {
    case "${1:-}" in
        activate|deactivate) eval "$("$CONDA_EXE" shell.posix "$@")" ;;
        *) "$CONDA_EXE" "$@" ;;
    esac
}
"""

ACTIVATE_SH = """\
# `source @CMD@ [ENV]`, as conda's bin/@CMD@ does: load the shell integration, then `conda @CMD@`
\\. "@ROOT@/etc/profile.d/conda.sh" || return $?
conda @CMD@ "$@"
"""


# --------------------------------------------------------------------------------------------- hosts
class LocalHosts:
    """The test hosts under one state directory (one fleet).

    >>> fleet = LocalHosts(".run/testhosts/demo")
    >>> fleet.create([HostSpec("h1", "dlami-venv", volumes=[VolumeSpec(size="256M")])])
    >>> fleet.destroy()
    """

    def __init__(self, state_dir: str | Path = DEFAULT_STATE_DIR, subnet: str = DEFAULT_SUBNET) -> None:
        self.state_dir = Path(state_dir).resolve()
        self.subnet = subnet
        if not _is_loopback(f"{subnet}.1"):
            raise HostError(f"subnet {subnet!r} must be three octets inside 127.0.0.0/8, e.g. 127.0.10")

    # paths
    @property
    def key(self) -> Path:
        return self.state_dir / "id_ed25519"

    @property
    def known_hosts(self) -> Path:
        return self.state_dir / "known_hosts"

    def host_dir(self, name: str) -> Path:
        return self.state_dir / "hosts" / name

    # public API
    def create(self, specs: list[HostSpec]) -> list[dict[str, Any]]:
        """Create (or keep, when already running as asked) the hosts; return their descriptions."""
        if os.geteuid() != 0:
            raise HostError("creating test hosts needs root (namespaces, mounts, loop devices)")
        for spec in specs:
            spec.validate()
        names = [s.name for s in specs]
        if len(set(names)) != len(names):
            raise HostError(f"host names repeat: {names}")
        with _locked(self.state_dir.parent / f".{self.state_dir.name}.lock"):
            self.state_dir.mkdir(parents=True, exist_ok=True)
            self._ensure_key()
            self._assign_addresses(specs)
            created = {}
            for spec in specs:
                fresh = not (self.host_dir(spec.name) / "host.json").exists()
                try:
                    created[spec.name] = self._create_one(spec)
                except BaseException:
                    if fresh:  # leave nothing of a host that never came up
                        for loop in _loops_backed_by(self.host_dir(spec.name)):
                            _detach_loop(loop)
                        shutil.rmtree(self.host_dir(spec.name), ignore_errors=True)
                    raise
            self._write_outputs()
            return [{**self.describe(n), "created": created[n]} for n in names]

    def destroy(self, names: list[str] | None = None) -> list[str]:
        """Stop and remove hosts (all when `names` is None); idempotent. Returns the names removed."""
        with _locked(self.state_dir.parent / f".{self.state_dir.name}.lock"):
            existing = self.names()
            targets = existing if names is None else [n for n in names if n in existing]
            for name in targets:
                self._destroy_one(name)
            # a half-created host may have left a loop device without a host.json
            if names is None:
                for loop in _loops_backed_by(self.state_dir):
                    _detach_loop(loop)
            if names is None and self.state_dir.exists():
                shutil.rmtree(self.state_dir)
            elif self.state_dir.exists():
                self._write_outputs()
            return targets

    def names(self) -> list[str]:
        hosts = self.state_dir / "hosts"
        return sorted(p.parent.name for p in hosts.glob("*/host.json")) if hosts.exists() else []

    def describe(self, name: str) -> dict[str, Any]:
        state = self._state(name)
        return {
            "name": name,
            "profile": state["profile"],
            "address": state["address"],
            "port": state["port"],
            "user": USER,
            "private_key": str(self.key),
            "known_hosts": str(self.known_hosts),
            "python": HOST_PYTHON,
            "env": PROFILES[state["profile"]]["env"],
            "running": self.running(name),
            "volumes": state["volumes"],
        }

    def list(self) -> list[dict[str, Any]]:
        return [self.describe(n) for n in self.names()]

    def running(self, name: str) -> bool:
        state = self._state(name)
        pid = state.get("pid")
        boot = str(self.host_dir(name) / "boot.json")
        return bool(_pid_alive(pid) and boot in _cmdline(pid) and _pid_alive(state.get("init_pid")))

    def inventory(self, group: str = "gpu_fleet") -> dict[str, Any]:
        """An Ansible inventory (as a dict, dump it as YAML or JSON) of the hosts, in `group`."""
        hosts = {}
        for host in self.list():
            hosts[host["name"]] = {
                "ansible_host": host["address"],
                "ansible_port": host["port"],
                "ansible_user": host["user"],
                "ansible_ssh_private_key_file": host["private_key"],
                "ansible_ssh_common_args": self.ssh_options_string(),
                "ansible_python_interpreter": host["python"],
                "testhost_profile": host["profile"],
                "testhost_env": host["env"],
                "testhost_volumes": host["volumes"],
            }
        return {"all": {"children": {group: {"hosts": hosts}}}}

    def molecule_instance_config(self, names: list[str] | None = None) -> list[dict[str, Any]]:
        """The instance config molecule's delegated driver reads (address, user, port, identity_file)."""
        return [{"instance": h["name"], "address": h["address"], "user": h["user"], "port": h["port"],
                 "identity_file": h["private_key"]} for h in self.list() if names is None or h["name"] in names]

    def ssh_options(self) -> list[str]:
        return ["-o", f"UserKnownHostsFile={self.known_hosts}", "-o", "StrictHostKeyChecking=yes",
                "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", "LogLevel=ERROR"]

    def ssh_options_string(self) -> str:
        return " ".join(self.ssh_options())

    def ssh_command(self, name: str, command: list[str] | None = None) -> list[str]:
        host = self.describe(name)
        return ["ssh", *self.ssh_options(), "-i", host["private_key"], "-p", str(host["port"]),
                f"{host['user']}@{host['address']}", *(command or [])]

    def ssh(self, name: str, command: str, check: bool = True, timeout: int = 120) -> subprocess.CompletedProcess[str]:
        """Run `command` on the host over SSH, as ubuntu (a login via sshd, like an operator's)."""
        proc = subprocess.run(self.ssh_command(name, [command]), capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise HostError(f"ssh {name} {command!r} failed ({proc.returncode}): {proc.stderr.strip()}")
        return proc

    def leftovers(self, namespaces: list[str] | None = None) -> dict[str, list[str]]:
        """What the hosts of this state dir leave on the machine: processes, mounts, loops, namespaces."""
        namespaces = namespaces or []
        found: dict[str, list[str]] = {"processes": [], "mounts": [], "loops": [], "namespaces": []}
        marker = str(self.state_dir)
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit() or int(proc.name) == os.getpid():
                continue
            pid = int(proc.name)
            if marker in _cmdline(pid):
                found["processes"].append(f"{pid} {_cmdline(pid)}")
            held = [i for i in (_ns_inode(pid, ns) for ns in ("mnt", "pid", "uts", "ipc", "net")) if i in namespaces]
            if held and not _mounts_mention(pid, marker):
                continue   # another process, in a namespace that was handed a freed id of ours
            found["namespaces"] += [f"{inode} held by {pid}" for inode in held]
        mountinfo = Path("/proc/self/mountinfo").read_text()
        found["mounts"] = [line for line in mountinfo.splitlines() if marker in line or
                           any(ns.split("[")[-1].rstrip("]") in line for ns in namespaces if "[" in ns)]
        found["loops"] = [f"/dev/{k} -> {v}" for k, v in _loops_backed_by(self.state_dir).items()] \
            if self.state_dir.exists() else []
        if not self.state_dir.exists():
            found["loops"] = [f"/dev/{k} -> {v}" for k, v in _loops_backed_by(self.state_dir.parent).items()
                              if v.startswith(marker + "/")]
        return found

    def namespaces(self) -> list[str]:
        """The namespace ids (e.g. 'mnt:[4026532]') of the running hosts."""
        out = []
        for name in self.names():
            out += self._state(name).get("namespaces", [])
        return out

    # internals
    def _state(self, name: str) -> dict[str, Any]:
        path = self.host_dir(name) / "host.json"
        if not path.exists():
            raise HostError(f"no test host {name!r} in {self.state_dir}")
        return json.loads(path.read_text())

    def _ensure_key(self) -> None:
        if not self.key.exists():
            _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "dlfleet-testhosts", "-f", str(self.key)])
        self.key.chmod(0o600)

    def _assign_addresses(self, specs: list[HostSpec]) -> None:
        taken = {self._state(n)["address"] for n in self.names()}
        for spec in specs:
            if (self.host_dir(spec.name) / "host.json").exists():
                spec.address = spec.address or self._state(spec.name)["address"]
                continue
            if spec.address is None:
                spec.address = next(f"{self.subnet}.{i}" for i in range(1, 255) if f"{self.subnet}.{i}" not in taken)
            taken.add(spec.address)

    def _create_one(self, spec: HostSpec) -> bool:
        """Create or restart one host; False when it already ran as asked."""
        hdir = self.host_dir(spec.name)
        state_path = hdir / "host.json"
        if state_path.exists():
            state = json.loads(state_path.read_text())
            if state["spec"] != asdict(spec):
                raise HostError(f"host {spec.name} exists with another spec; destroy it first "
                                    f"(have {state['spec']}, asked {asdict(spec)})")
            if self.running(spec.name) and _ssh_ready(spec.address, spec.port, 5):
                return False
            self._stop(spec.name)
        elif not _port_free(spec.address, spec.port):
            raise HostError(f"host {spec.name}: {spec.address}:{spec.port} is in use; pick another address")
        layer = ensure_image(spec.profile)
        for sub in ("upper", "work", "merged", "volumes", "base"):
            (hdir / sub).mkdir(parents=True, exist_ok=True)
        volumes = self._attach_volumes(spec, hdir)
        state = {"spec": asdict(spec), "profile": spec.profile, "address": spec.address, "port": spec.port,
                 "image": str(layer), "volumes": volumes}
        _write_json(state_path, state)
        boot = {
            "name": spec.name, "address": spec.address, "port": spec.port,
            "layers": [str(layer)], "upper": str(hdir / "upper"), "work": str(hdir / "work"),
            "merged": str(hdir / "merged"), "base": str(hdir / "base"),
            "public_key": self.key.with_suffix(".pub").read_text().strip(),
            "volumes": volumes, "mask": [str(self.state_dir), str(IMAGES_DIR)],
            "etc_hosts": {s["name"]: s["address"] for s in self._peer_addresses(spec)},
        }
        _write_json(hdir / "boot.json", boot)
        log = open(hdir / "init.log", "ab")  # noqa: SIM115 - handed to the detached init process
        proc = subprocess.Popen(
            ["unshare", "--mount", "--uts", "--ipc", "--pid", "--fork", "--kill-child", "--propagation", "private",
             "--", sys.executable, str(Path(__file__).resolve()), "_init", str(hdir / "boot.json")],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True, close_fds=True)
        log.close()
        state["pid"] = proc.pid
        _write_json(state_path, state)
        init_pid = None
        for _ in range(100):
            kids = _children(proc.pid)
            if kids:
                init_pid = kids[0]
                break
            time.sleep(0.05)
        if not init_pid or not _ssh_ready(spec.address, spec.port, 30):
            tail = (hdir / "init.log").read_text(errors="replace")[-2000:]
            self._stop(spec.name)
            raise HostError(f"host {spec.name} did not start sshd on {spec.address}:{spec.port}:\n{tail}")
        state["init_pid"] = init_pid
        state["namespaces"] = [i for i in (_ns_inode(init_pid, ns) for ns in ("mnt", "pid", "uts", "ipc")) if i]
        _write_json(state_path, state)
        self._add_known_host(spec, hdir)
        return True

    def _peer_addresses(self, spec: HostSpec) -> list[dict[str, str]]:
        peers = [{"name": n, "address": self._state(n)["address"]} for n in self.names() if n != spec.name]
        return [*peers, {"name": spec.name, "address": spec.address}]

    def _add_known_host(self, spec: HostSpec, hdir: Path) -> None:
        pub = (hdir / "upper/etc/ssh/ssh_host_ed25519_key.pub").read_text().split()
        host = spec.address if spec.port == 22 else f"[{spec.address}]:{spec.port}"
        lines = [ln for ln in (self.known_hosts.read_text().splitlines() if self.known_hosts.exists() else [])
                 if ln.split(" ", 1)[0] != host]
        lines.append(f"{host} {pub[0]} {pub[1]}")
        self.known_hosts.write_text("\n".join(lines) + "\n")

    def _attach_volumes(self, spec: HostSpec, hdir: Path) -> list[dict[str, Any]]:
        out = []
        attached = {Path(v): k for k, v in _loops_backed_by(hdir / "volumes").items()}
        for index, vol in enumerate(spec.volumes, start=1):
            seed = hashlib.sha256(f"{self.state_dir.name}/{spec.name}/{index}".encode()).hexdigest()
            if vol.kind == "ebs":
                vol_id = vol.id or f"vol-{seed[:17]}"
                by_id = f"{EBS_BY_ID}{vol_id.replace('-', '')}"
            else:
                vol_id = f"AWS{seed[:17].upper()}"
                by_id = f"{INSTANCE_STORE_BY_ID}{vol_id}"
            image = hdir / "volumes" / f"{vol_id}.img"
            fresh = not image.exists()
            if fresh:
                with open(image, "wb") as fh:
                    fh.truncate(_size_bytes(vol.size))
            loop = attached.get(image.resolve())
            if loop is None:
                loop = Path(_run(["losetup", "--find", "--show", str(image)]).stdout.strip()).name
            if fresh and vol.fstype:
                _preformat(f"/dev/{loop}", vol.fstype, vol.files)
            major, minor = (Path(f"/sys/block/{loop}/dev").read_text().strip().split(":"))
            out.append({
                "kind": vol.kind, "id": vol_id, "size": vol.size,
                "by_id": f"/dev/disk/by-id/{by_id}" if vol.by_id else None,
                "device": f"/dev/nvme{index}n1", "device_name": vol.device_name,
                "loop": f"/dev/{loop}", "major": int(major), "minor": int(minor), "image": str(image),
            })
        return out

    def _stop(self, name: str) -> None:
        state = self._state(name)
        pid, init_pid = state.get("pid"), state.get("init_pid")
        marker = str(self.host_dir(name) / "boot.json")   # in the init's and unshare's command lines
        # The processes of the host's namespaces, found while its init still holds them: a namespace's inode
        # number is handed to a new namespace once the old one is gone, and after a crash (init killed, the
        # kernel ends the rest) the numbers in host.json may already name another host's namespaces.
        members: list[tuple[int, int | None]] = []
        namespaces = set(state.get("namespaces", []))
        if init_pid and _pid_alive(init_pid) and marker in _cmdline(init_pid):
            members = [(int(p.name), _starttime(int(p.name))) for p in Path("/proc").iterdir()
                       if p.name.isdigit() and any(_ns_inode(int(p.name), ns) in namespaces for ns in ("mnt", "pid"))]
            os.kill(init_pid, signal.SIGTERM)
            _wait_gone(init_pid, 5)
            if _pid_alive(init_pid):
                os.kill(init_pid, signal.SIGKILL)
        if pid and _pid_alive(pid) and marker in _cmdline(pid):
            _wait_gone(pid, 5)
            if _pid_alive(pid):
                os.kill(pid, signal.SIGKILL)
                _wait_gone(pid, 5)
        with contextlib.suppress(ChildProcessError, OSError):
            if pid:
                os.waitpid(pid, os.WNOHANG)
        deadline = time.monotonic() + 10
        while members and time.monotonic() < deadline:
            members = [(p, t) for p, t in members if _pid_alive(p) and _starttime(p) == t]
            for p, _ in members:
                with contextlib.suppress(OSError):
                    os.kill(p, signal.SIGKILL)
            time.sleep(0.1)

    def _destroy_one(self, name: str) -> None:
        hdir = self.host_dir(name)
        self._stop(name)
        loops = _loops_backed_by(hdir / "volumes")
        _stop_md_arrays(set(loops), hdir)
        for loop in loops:
            _detach_loop(loop)
        if self.known_hosts.exists():
            address = self._state(name)["address"]
            keep = [ln for ln in self.known_hosts.read_text().splitlines()
                    if ln.split(" ", 1)[0] not in (address, f"[{address}]:{self._state(name)['port']}")]
            self.known_hosts.write_text("\n".join(keep) + ("\n" if keep else ""))
        shutil.rmtree(hdir)

    def _write_outputs(self) -> None:
        _write_json(self.state_dir / "hosts.json", self.list())
        inventory = self.inventory()
        (self.state_dir / "inventory.json").write_text(json.dumps(inventory, indent=2) + "\n")
        (self.state_dir / "inventory.yml").write_text(_to_yaml(inventory))


def _wait_gone(pid: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while _pid_alive(pid) and time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.05)


def _detach_loop(loop: str) -> None:
    deadline = time.monotonic() + 15
    while Path(f"/sys/block/{loop}/loop/backing_file").exists():
        proc = subprocess.run(["losetup", "-d", f"/dev/{loop}"], capture_output=True, text=True)
        if proc.returncode == 0 and not Path(f"/sys/block/{loop}/loop/backing_file").exists():
            return
        if time.monotonic() > deadline:
            raise HostError(f"cannot detach /dev/{loop}: {proc.stderr.strip()}")
        time.sleep(0.2)


def _stop_md_arrays(loops: set[str], hdir: Path) -> None:
    """Stop RAID arrays that a host assembled from its loop devices (md devices are global)."""
    for md in Path("/sys/block").glob("md*"):
        slaves = {p.name for p in (md / "slaves").iterdir()} if (md / "slaves").exists() else set()
        if not slaves & loops:
            continue
        major, minor = (md / "dev").read_text().strip().split(":")
        node = hdir / f"{md.name}.node"
        with contextlib.suppress(FileExistsError):
            os.mknod(node, stat.S_IFBLK | 0o600, os.makedev(int(major), int(minor)))
        subprocess.run(["mdadm", "--stop", str(node)], capture_output=True)
        node.unlink(missing_ok=True)


def _preformat(device: str, fstype: str, files: dict[str, str]) -> None:
    """Give a fresh volume a filesystem and files, as a volume restored from a snapshot would have."""
    _run([f"mkfs.{fstype}", "-q", device] if fstype != "xfs" else ["mkfs.xfs", "-q", device])
    if not files:
        return
    script = 'set -e; d=$(mktemp -d); mount "$1" "$d"; shift; cd "$d"; ' \
             'while [ $# -gt 0 ]; do mkdir -p "$(dirname "$1")"; printf %s "$2" > "$1"; shift 2; done; ' \
             'cd /; umount "$d"; rmdir "$d"'
    args = [x for kv in files.items() for x in kv]
    _run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", device, *args])


def _to_yaml(data: Any, indent: int = 0) -> str:
    """A small YAML writer for the inventory (JSON scalars are valid YAML)."""
    pad = "  " * indent
    if isinstance(data, dict):
        if not data:
            return "{}\n"
        out = ""
        for key, value in data.items():
            if isinstance(value, dict) and value:
                out += f"{pad}{key}:\n{_to_yaml(value, indent + 1)}"
            else:
                out += f"{pad}{key}: {json.dumps(value)}\n"
        return out
    return f"{pad}{json.dumps(data)}\n"


# --------------------------------------------------------------------------------------------- init
def _host_init(boot_path: str) -> None:
    """PID 1 of a host: mounts its root, pivots into it, starts sshd and reaps orphans until stopped."""
    boot = json.loads(Path(boot_path).read_text())
    merged = Path(boot["merged"])
    # overlayfs refuses a lower layer below another one (the image layer lies under "/"), so "/" enters
    # through an overlay of its own, whose empty upper layer sits on a tmpfs
    base = Path(boot["base"])
    _run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=755", "tmpfs", str(base)])
    for sub in ("upper", "work", "root"):
        (base / sub).mkdir()
    _run(["mount", "-t", "overlay", "overlay", "-o",
          f"lowerdir=/,upperdir={base}/upper,workdir={base}/work", str(base / "root")])
    lower = ":".join([*boot["layers"], str(base / "root")])
    _run(["mount", "-t", "overlay", "overlay", "-o",
          f"lowerdir={lower},upperdir={boot['upper']},workdir={boot['work']}", str(merged)])
    _run(["mount", "-t", "proc", "proc", str(merged / "proc")])
    _run(["mount", "-t", "sysfs", "-o", "ro", "sysfs", str(merged / "sys")])
    _populate_dev(merged, boot["volumes"])
    _run(["mount", "-t", "tmpfs", "-o", "mode=755", "tmpfs", str(merged / "run")])
    _run(["mount", "-t", "tmpfs", "-o", "mode=1777", "tmpfs", str(merged / "tmp")])
    for path in boot["mask"]:
        target = merged / path.lstrip("/")
        if target.is_dir():
            _run(["mount", "-t", "tmpfs", "-o", "ro,size=4k,mode=755", "tmpfs", str(target)])
    old = merged / ".dlfleet-oldroot"
    old.mkdir(exist_ok=True)
    _run(["pivot_root", str(merged), str(old)])
    os.chdir("/")
    _run(["umount", "-l", "/.dlfleet-oldroot"])
    os.rmdir("/.dlfleet-oldroot")
    socket.sethostname(boot["name"])
    _first_boot(boot)
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    sshd = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", "/etc/ssh/sshd_config"])

    def stop(_signum: int, _frame: Any) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(-1, signal.SIGTERM)   # every other process of this PID namespace
        time.sleep(1)
        with contextlib.suppress(ProcessLookupError):
            os.kill(-1, signal.SIGKILL)
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    while True:
        try:
            pid, _status = os.wait()
        except ChildProcessError:
            time.sleep(1)
            continue
        if pid == sshd.pid:
            print("sshd exited; host stops", flush=True)
            stop(0, None)


def _populate_dev(merged: Path, volumes: list[dict[str, Any]]) -> None:
    dev = merged / "dev"
    _run(["mount", "-t", "tmpfs", "-o", "mode=755,size=1m", "tmpfs", str(dev)])
    for name, major, minor, mode in (("null", 1, 3, 0o666), ("zero", 1, 5, 0o666), ("full", 1, 7, 0o666),
                                     ("random", 1, 8, 0o666), ("urandom", 1, 9, 0o666), ("tty", 5, 0, 0o666)):
        os.mknod(dev / name, stat.S_IFCHR | mode, os.makedev(major, minor))
        os.chmod(dev / name, mode)
    for name in ("pts", "shm", "disk", "disk/by-id"):
        (dev / name).mkdir()
    _run(["mount", "-t", "devpts", "-o", "newinstance,ptmxmode=0666,mode=620,gid=5", "devpts", str(dev / "pts")])
    _run(["mount", "-t", "tmpfs", "-o", "mode=1777", "tmpfs", str(dev / "shm")])
    os.symlink("pts/ptmx", dev / "ptmx")
    os.symlink("/proc/self/fd", dev / "fd")
    for i, name in enumerate(("stdin", "stdout", "stderr")):
        os.symlink(f"/proc/self/fd/{i}", dev / name)
    for vol in volumes:
        devnum = os.makedev(vol["major"], vol["minor"])
        nvme = vol["device"].removeprefix("/dev/")
        # the kernel's own name (blkid and mount resolve /proc/partitions names) and the NVMe name
        for node in (Path(vol["loop"]).name, nvme):
            os.mknod(dev / node, stat.S_IFBLK | 0o660, devnum)
            os.chown(dev / node, 0, 6)  # group disk
        if vol["by_id"]:
            os.symlink(f"../../{nvme}", dev / "disk" / "by-id" / Path(vol["by_id"]).name)
        if vol["device_name"]:
            os.symlink(nvme, dev / vol["device_name"].removeprefix("/dev/"))


def _first_boot(boot: dict[str, Any]) -> None:
    Path("/etc/hostname").write_text(boot["name"] + "\n")
    hosts = ["127.0.0.1 localhost", "::1 localhost ip6-localhost ip6-loopback"]
    hosts += [f"{addr} {name}" for name, addr in boot["etc_hosts"].items()]
    Path("/etc/hosts").write_text("\n".join(hosts) + "\n")
    key = Path("/etc/ssh/ssh_host_ed25519_key")
    marker = Path("/etc/ssh/.dlfleet-host-key")
    if not marker.exists():  # never reuse the machine's own host keys
        for old in Path("/etc/ssh").glob("ssh_host_*"):
            old.unlink()
        _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"root@{boot['name']}", "-f", str(key)])
        marker.write_text(boot["name"] + "\n")
    Path("/etc/ssh/sshd_config").write_text(SSHD_CONFIG.format(address=boot["address"], port=boot["port"]))
    home = Path("/home") / USER
    uid, gid = _uid_gid(Path("/"), USER)
    ssh_dir = home / ".ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    (ssh_dir / "authorized_keys").write_text(boot["public_key"] + "\n")
    os.chmod(ssh_dir / "authorized_keys", 0o600)
    for path in (ssh_dir, ssh_dir / "authorized_keys"):
        os.chown(path, uid, gid)


SSHD_CONFIG = """\
# sshd of a dlfleet test host: key-only login on the host's own loopback address
ListenAddress {address}:{port}
HostKey /etc/ssh/ssh_host_ed25519_key
PermitRootLogin no
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
AuthorizedKeysFile .ssh/authorized_keys
UsePAM no
PrintMotd no
PidFile /run/sshd.pid
MaxStartups 100:30:200
MaxSessions 100
AcceptEnv LANG LC_*
Subsystem sftp /usr/lib/openssh/sftp-server
"""


# --------------------------------------------------------------------------------------------- CLI
def _parse_host(text: str) -> HostSpec:
    name, _, profile = text.partition(":")
    return HostSpec(name=name, profile=profile or "bare")


def _load_spec(path: str) -> list[HostSpec]:
    text = Path(path).read_text()
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        import yaml  # only for YAML spec files

        data = yaml.safe_load(text)
    hosts = data["hosts"] if isinstance(data, dict) else data
    return [HostSpec.from_dict(h) for h in hosts]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="testhosts.py", description=__doc__.split("\n")[0])
    parser.add_argument("--state-dir", default=str(DEFAULT_STATE_DIR), help="one fleet of hosts (default %(default)s)")
    parser.add_argument("--subnet", default=DEFAULT_SUBNET, help="first three octets in 127/8 (default %(default)s)")
    sub = parser.add_subparsers(dest="command", required=True)
    create = sub.add_parser("create", help="create hosts (idempotent); prints their JSON")
    create.add_argument("hosts", nargs="*", metavar="NAME[:PROFILE]", help=f"profiles: {', '.join(PROFILES)}")
    create.add_argument("--spec", help="JSON/YAML file: a list of hosts (name, profile, address, port, volumes, "
                        "instance_store) or {hosts: [...]}")
    create.add_argument("--instance-config", metavar="FILE",
                        help="also write molecule's instance config (YAML) for the hosts to FILE")
    create.add_argument("--ebs", action="append", default=[], metavar="SIZE", help="an EBS volume per host (repeat)")
    create.add_argument("--instance-store", action="append", default=[], metavar="SIZE",
                        help="an instance-store NVMe disk per host (repeat)")
    destroy = sub.add_parser("destroy", help="destroy hosts (all when none named); idempotent")
    destroy.add_argument("hosts", nargs="*", metavar="NAME")
    sub.add_parser("list", help="print the hosts as JSON")
    inventory = sub.add_parser("inventory", help="print an Ansible inventory (YAML)")
    inventory.add_argument("--group", default="gpu_fleet")
    ssh = sub.add_parser("ssh", help="ssh into a host as ubuntu (or run a command)")
    ssh.add_argument("host")
    ssh.add_argument("cmd", nargs=argparse.REMAINDER)
    image = sub.add_parser("build-image", help="build a profile's image layer now (it is cached)")
    image.add_argument("profile", choices=sorted(PROFILES))
    sub.add_parser("leftovers", help="print what this state dir's hosts left on the machine (JSON)")
    sub.add_parser("_init").add_argument("boot")
    sub.add_parser("_build").add_argument("spec")
    args = parser.parse_args(argv)
    try:
        return _dispatch(args)
    except HostError as exc:
        print(f"testhosts: {exc}", file=sys.stderr)
        return 1


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "_init":
        _host_init(args.boot)
        return 0
    if args.command == "_build":
        _build_inside(args.spec)
        return 0
    if args.command == "build-image":
        print(ensure_image(args.profile))
        return 0
    fleet = LocalHosts(args.state_dir, args.subnet)
    if args.command == "create":
        specs = _load_spec(args.spec) if args.spec else []
        for host in args.hosts:
            spec = _parse_host(host)
            spec.volumes = [VolumeSpec(size=s) for s in args.ebs]
            spec.volumes += [VolumeSpec(kind="instance-store", size=s) for s in args.instance_store]
            specs.append(spec)
        if not specs:
            raise HostError("name at least one host (NAME[:PROFILE]) or give --spec FILE")
        hosts = fleet.create(specs)
        if args.instance_config:
            config = fleet.molecule_instance_config([h["name"] for h in hosts])
            Path(args.instance_config).write_text("".join(
                "- " + _to_yaml(item, 1).lstrip() for item in config) or "[]\n")
        print(json.dumps(hosts, indent=2))
    elif args.command == "destroy":
        print(json.dumps({"destroyed": fleet.destroy(args.hosts or None)}))
    elif args.command == "list":
        print(json.dumps(fleet.list(), indent=2))
    elif args.command == "inventory":
        print(_to_yaml(fleet.inventory(args.group)), end="")
    elif args.command == "ssh":
        cmd = fleet.ssh_command(args.host, args.cmd)
        os.execvp(cmd[0], cmd)
    elif args.command == "leftovers":
        print(json.dumps(fleet.leftovers(), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
