"""`conda` of the dlami-legacy-conda test image: the legacy DLAMI's conda CLI surface, backed by venvs.

No real conda can be installed offline (it needs a conda channel), so the test image reproduces the
layout and the commands that operators and the dlami role use, with the same output formats:

  conda --version                      conda info --json           conda env list [--json]
  conda create -y (-n NAME | -p PATH) [python=X.Y ...]             conda run -n NAME CMD...
  conda shell.posix activate [ENV]     conda shell.posix deactivate

Environments are Python venvs (the system python3, whatever python=X.Y asks) with a conda-meta/
directory, as conda's own envs have. Packages other than python are refused: install them with pip.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VERSION = "4.10.3"  # the conda release of the last legacy DLAMIs


def envs() -> list[Path]:
    found = [ROOT]
    if (ROOT / "envs").is_dir():
        found += sorted(p for p in (ROOT / "envs").iterdir() if (p / "conda-meta").is_dir())
    return found


def prefix_of(env: str) -> Path:
    if env in ("base", "root"):
        return ROOT
    if "/" in env:
        return Path(env).resolve()
    return ROOT / "envs" / env


def fail(message: str, code: int = 1) -> None:
    print(f"\nCondaError: {message}\n", file=sys.stderr)
    sys.exit(code)


def cmd_info(args: list[str]) -> None:
    info = {"conda_version": VERSION, "root_prefix": str(ROOT), "conda_prefix": str(ROOT),
            "envs": [str(p) for p in envs()], "envs_dirs": [str(ROOT / "envs")],
            "python_version": ".".join(map(str, sys.version_info[:3])), "platform": "linux-64"}
    if "--json" in args:
        print(json.dumps(info, indent=2))
    else:
        print(f"     active environment : {os.environ.get('CONDA_DEFAULT_ENV', 'None')}")
        print(f"       base environment : {ROOT}")
        print(f"          conda version : {VERSION}")


def cmd_env(args: list[str]) -> None:
    if not args or args[0] not in ("list",):
        fail(f"conda env {' '.join(args)}: only `conda env list` exists in this test image")
    if "--json" in args[1:]:
        print(json.dumps({"envs": [str(p) for p in envs()]}, indent=2))
        return
    print("# conda environments:\n#")
    active = os.environ.get("CONDA_PREFIX", "")
    for p in envs():
        name = "base" if p == ROOT else p.name
        print(f"{name:<25}{'*' if str(p) == active else ' '}  {p}")


def cmd_create(args: list[str]) -> None:
    prefix = None
    specs = []
    it = iter(args)
    for arg in it:
        if arg in ("-n", "--name"):
            prefix = prefix_of(next(it))
        elif arg in ("-p", "--prefix"):
            prefix = Path(next(it)).resolve()
        elif arg in ("-y", "--yes", "-q", "--quiet"):
            continue
        elif arg.startswith("-"):
            fail(f"option {arg} is not known to this test image's conda")
        else:
            specs.append(arg)
    if prefix is None:
        fail("conda create needs -n NAME or -p PATH")
    others = [s for s in specs if s.split("=")[0] != "python"]
    if others:
        fail(f"packages {others} cannot be installed offline; create the env, then pip install them")
    if (prefix / "conda-meta").is_dir():
        fail(f"prefix already exists: {prefix}")
    subprocess.run(["/usr/bin/python3", "-m", "venv", str(prefix)], check=True)
    (prefix / "conda-meta").mkdir(exist_ok=True)
    (prefix / "conda-meta" / "history").write_text(f"==> conda create {' '.join(args)} <==\n")
    print(f"#\n# To activate this environment, use\n#\n#     $ conda activate {prefix.name}\n#")


def cmd_run(args: list[str]) -> None:
    if len(args) < 3 or args[0] not in ("-n", "-p"):
        fail("usage: conda run -n NAME CMD...")
    prefix = prefix_of(args[1]) if args[0] == "-n" else Path(args[1])
    env = dict(os.environ, PATH=f"{prefix}/bin:{os.environ.get('PATH', '')}", CONDA_PREFIX=str(prefix))
    sys.exit(subprocess.run(args[2:], env=env).returncode)


def strip_conda_paths(path: str) -> str:
    roots = {str(p / "bin") for p in envs()}
    return ":".join(p for p in path.split(":") if p and (p not in roots or p == str(ROOT / "bin")))


def cmd_shell(args: list[str]) -> None:
    if not args or args[0] not in ("activate", "deactivate"):
        fail("usage: conda shell.posix activate [ENV] | deactivate")
    path = strip_conda_paths(os.environ.get("PATH", ""))
    if args[0] == "deactivate":
        print(f"export PATH='{path}'\nunset CONDA_PREFIX CONDA_DEFAULT_ENV CONDA_PROMPT_MODIFIER\n"
              "export CONDA_SHLVL='0'")
        return
    env = args[1] if len(args) > 1 else "base"
    prefix = prefix_of(env)
    if not (prefix / "bin" / "python").exists():
        fail(f"Could not find conda environment: {env}\nYou can list all discoverable environments with "
             "`conda info --envs`.")
    name = "base" if prefix == ROOT else prefix.name
    print(f"export PATH='{prefix}/bin:{path}'\nexport CONDA_PREFIX='{prefix}'\nexport CONDA_DEFAULT_ENV='{name}'\n"
          f"export CONDA_PROMPT_MODIFIER='({name}) '\nexport CONDA_SHLVL='1'\nexport CONDA_EXE='{ROOT}/bin/conda'")


def main() -> None:
    args = sys.argv[1:]
    if not args or args[0] in ("-h", "--help"):
        print(__doc__)
        return
    if args[0] in ("--version", "-V"):
        print(f"conda {VERSION}")
        return
    commands = {"info": cmd_info, "env": cmd_env, "create": cmd_create, "run": cmd_run, "shell.posix": cmd_shell,
                "shell.bash": cmd_shell}
    if args[0] not in commands:
        fail(f"conda {args[0]} is not available in this test image (see `conda --help`)")
    commands[args[0]](args[1:])


if __name__ == "__main__":
    main()
