"""Start a job process that dies with the service: ``python launch.py PARENT_PID CMD...``.

Run as a script (not ``-m convpipe...``) so that it does not import convpipe before exec'ing the job.
On Linux it asks the kernel to SIGKILL it when its parent dies (``PR_SET_PDEATHSIG`` survives exec), so
a service killed with SIGKILL leaves no job writing behind its back; the restarted service then resumes
the job from its recorded chunks. Elsewhere the restarted service kills leftover job processes itself.
"""

import os
import signal
import sys

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the service's start-up sweep covers this case
        pass


def main(argv: list[str]) -> None:
    parent = int(argv[0])
    cmd = argv[1:]
    _die_with_parent()
    if os.getppid() != parent:  # the service died before prctl took effect
        sys.exit(137)
    os.execv(cmd[0], cmd)


if __name__ == "__main__":
    main(sys.argv[1:])
