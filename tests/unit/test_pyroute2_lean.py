"""The lean pyroute2 stand-in: what acpd uses without the package __init__, the rest on demand.

Each check runs in a fresh interpreter: pytest's own process may already hold pyroute2.
"""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap


def run(code: str) -> dict:
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                         text=True, timeout=60, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_what_acpd_uses_loads_without_the_heavy_modules() -> None:
    got = run("""
        import json, sys
        from acp_openwrt import pyroute2_lean
        installed = pyroute2_lean.install()
        from pyroute2 import IPRoute, netns
        from pyroute2.netlink.exceptions import NetlinkError
        from pyroute2.netlink.rtnl.marshal import MarshalRtnl
        import pyroute2, pyroute2.iproute.linux
        print(json.dumps({"installed": installed,
                          "same": IPRoute is pyroute2.iproute.linux.IPRoute,
                          "netns": netns.__name__, "version": pyroute2.__version__,
                          "heavy": sorted(m for m in ("pyroute2.ndb.main", "pyroute2.ipdb",
                                                      "sqlite3", "psutil") if m in sys.modules)}))
    """)
    assert got["installed"] is True
    assert got["same"] is True
    assert got["netns"] == "pyroute2.netns"
    assert got["version"] not in ("", "unknown")
    assert got["heavy"] == []


def test_any_other_name_loads_the_real_package() -> None:
    got = run("""
        import json, sys
        from acp_openwrt import pyroute2_lean
        pyroute2_lean.install()
        from pyroute2 import IPRoute
        from pyroute2 import NDB
        import pyroute2
        try:
            from pyroute2 import NoSuchName
            missing = False
        except ImportError:
            missing = True
        print(json.dumps({"ndb": NDB.__module__, "same": pyroute2.IPRoute is IPRoute,
                          "all": len(pyroute2.__all__), "missing_raises": missing}))
    """)
    assert got == {"ndb": "pyroute2.ndb.main", "same": True, "all": got["all"],
                   "missing_raises": True}
    assert got["all"] > 20


def test_install_does_nothing_once_pyroute2_is_imported() -> None:
    got = run("""
        import json
        import pyroute2
        from acp_openwrt import pyroute2_lean
        print(json.dumps({"installed": pyroute2_lean.install(), "ndb": hasattr(pyroute2, "NDB")}))
    """)
    assert got == {"installed": False, "ndb": True}


LAZY_NAMES_SEEN = """
    import json
    from acp_openwrt import pyroute2_lean
    LEAN = pyroute2_lean.install()
    import pyroute2
    seen = {}
    for name in pyroute2_lean.LAZY_NAMES:
        value = getattr(pyroute2, name, None)
        seen[name] = None if value is None else f"{value.__module__}.{value.__qualname__}"
    print(json.dumps(seen))
"""


def test_lazy_names_are_what_the_real_package_gives() -> None:
    """Across pyroute2 versions (0.7.9 has no AsyncIPRoute and keeps NetNS outside
    iproute.linux) a lazy name is the real package's object, or absent from both."""
    lean = run(LAZY_NAMES_SEEN)
    real = run(LAZY_NAMES_SEEN.replace("LEAN = pyroute2_lean.install()", "LEAN = False"))
    assert lean == real
    assert lean["IPRoute"] == "pyroute2.iproute.linux.IPRoute"
    assert lean["NetNS"] is not None
