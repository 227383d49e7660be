"""What the interop runs take from the machine: free TCP ports and Debian packages."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def ensure_debian_package(package: str, command: str) -> bool:
    """Install `package` with apt-get unless `command` is on the PATH already; True if it
    was installed now."""
    if shutil.which(command):
        return False
    print(f"installing Debian's {package} ...", flush=True)
    environment = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=environment)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", package],
        check=True,
        env=environment,
        stdout=subprocess.DEVNULL,
    )
    return True
