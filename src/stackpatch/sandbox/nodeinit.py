"""Inside a sandbox node's new UTS and mount namespaces (see nodes.py): set its hostname, bind its own
certs.d on /etc/docker/certs.d (only this namespace sees it), then become its dockerd.

    python -m stackpatch.sandbox.nodeinit HOSTNAME NODE_CERTS_D /etc/docker/certs.d -- dockerd ARGS…
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys


def main(argv: list[str]) -> int:
    if len(argv) < 5 or argv[3] != "--":
        print("usage: python -m stackpatch.sandbox.nodeinit HOSTNAME CERTS_D TARGET -- PROGRAM ARGS…", file=sys.stderr)
        return 2
    hostname, certs_d, target, program = argv[0], argv[1], argv[2], argv[4:]
    socket.sethostname(hostname)
    subprocess.run(["mount", "--bind", certs_d, target], check=True, stdin=subprocess.DEVNULL)
    os.execvp(program[0], program)
    return 1  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
