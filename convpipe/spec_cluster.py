"""The form of ``execution.cluster``, checked without reading or connecting to anything.

Part of parsing a spec (:mod:`convpipe.spec_model`): a ``profile:NAME`` is checked only as a name and a
``profile:PATH`` only as a path; :mod:`convpipe.bind` reads the profile, :mod:`convpipe.cluster` opens the
scheduler.
"""

from __future__ import annotations

import os
import re

from .errors import SpecError

#: What a bare profile name may hold (``profile:slurm``); anything with a ``/`` or ``.yaml`` is a path.
PROFILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")

def check_cluster(cluster: str) -> str | None:
    """Check a cluster string's form without reading or connecting to anything (what ``validate`` parses).

    Returns the profile file a ``profile:PATH`` names (``None`` for every other form, a profile name
    included: names are looked up when the spec is bound). Raises SpecError (path ``execution.cluster``).
    """
    if not isinstance(cluster, str) or not cluster:
        raise SpecError("cluster is empty: use threads, processes, local:N, tcp://host:port, tls://host:port "
                        "or profile:NAME", path="execution.cluster")
    if cluster in ("threads", "sync", "synchronous", "processes"):
        return None
    if cluster.startswith("local:"):
        n = cluster.split(":", 1)[1]
        if not n.isdigit() or int(n) < 1:
            raise SpecError(f"cluster {cluster!r}: local:N needs a worker count N >= 1", path="execution.cluster")
        if int(n) > 4096:
            raise SpecError(f"cluster {cluster!r}: at most 4096 local workers", path="execution.cluster")
        return None
    if cluster.startswith(("tcp://", "tls://")):
        from urllib.parse import urlsplit

        scheme = cluster[:3]
        try:
            parts = urlsplit(cluster)
            host, port = parts.hostname, parts.port
        except ValueError as e:  # a port that is not a number, or out of range
            raise SpecError(f"cluster {cluster!r}: {e} ({scheme}://host:port)", path="execution.cluster") from None
        if not host:
            raise SpecError(f"cluster {cluster!r} names no host ({scheme}://host:port)", path="execution.cluster")
        if port is None or port == 0:
            raise SpecError(f"cluster {cluster!r} has no port: a Dask scheduler address is {scheme}://{host}:PORT "
                            "(8786 by default)", path="execution.cluster")
        if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username or parts.password:
            raise SpecError(f"cluster {cluster!r}: a scheduler address is {scheme}://host:port and nothing more",
                            path="execution.cluster")
        return None
    if cluster.startswith("profile:"):
        name = cluster.removeprefix("profile:")
        if not name:
            raise SpecError("profile: needs a name or a path, e.g. profile:slurm", path="execution.cluster")
        if "/" in name or os.sep in name or name.endswith((".yaml", ".yml")):
            if "\x00" in name:
                raise SpecError("a profile path holds a NUL character", path="execution.cluster")
            return name
        if not PROFILE_NAME.match(name) or len(name) > 200:
            raise SpecError(f"profile name {name[:60]!r} may hold only letters, digits, '.', '_' and '-' "
                            "(at most 200)", path="execution.cluster")
        return None
    raise SpecError(f"unknown cluster {cluster!r}: use threads, processes, local:N, tcp://host:port, "
                    f"tls://host:port or profile:NAME", path="execution.cluster")
