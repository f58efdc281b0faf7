"""pip bootstrap for ansible-test's sanity virtual environments, from the package index alone.

ansible-test bootstraps pip into each empty sanity venv with a get-pip script it downloads from ansible's own CI file
host, which machines that reach only the package registries cannot. This script does the same job: it installs the
pip wheel that Python ships (ensurepip), then runs `pip install` with the arguments ansible-test gives get-pip (the
pinned pip version, setuptools/wheel flags), from the package index as configured for pip. `make collection-sanity`
puts it where ansible-test looks for its cached copy (a HOME of the build's own).
"""

import ensurepip
import os
import runpy
import sys

# get-pip's own flags (pip install has no such options): they say not to add setuptools/wheel, which is what the
# install below does anyway (ensurepip's bundled setuptools stays, as a venv made with pip has it).
OWN_FLAGS = {"--no-setuptools", "--no-wheel"}

environ = dict(os.environ)
ensurepip.bootstrap(upgrade=False, default_pip=True)
# ensurepip turns pip's configuration off for the rest of the process (PIP_CONFIG_FILE=/dev/null, PIP_* removed); the
# install from the index needs it (the index, certificates).
os.environ.clear()
os.environ.update(environ)
sys.argv = ["pip", "install", *(arg for arg in sys.argv[1:] if arg not in OWN_FLAGS)]
runpy.run_module("pip", run_name="__main__", alter_sys=True)
