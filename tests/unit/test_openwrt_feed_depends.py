"""Every DEPENDS of every recipe of the feed names a package that exists on OpenWrt 24.10, 25.12
and master, so that opkg/apk can install what the feed builds (issue 14: python3-asn1crypto was
in no feed, python3-email is gone on master).

Facts: tests/unit/data/openwrt-package-names.tsv, a verbatim copy of
../shared/openwrt-userland/openwrt-package-names.tsv: every package of lang/python and
net/strongswan of openwrt/packages, with its version, per branch at the commits in its header.
The names from openwrt/openwrt and the luci feed are listed below (CORE_PACKAGES), the feed's
own come from its recipes. `$(if $(wildcard ...),A,B)` in a DEPENDS is evaluated per branch.
"""
from __future__ import annotations

import ast
import importlib.util
import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit


def _sibling(name: str):
    """test_openwrt_package.py's helpers (feed scan, Recipe, version ranges), not a copy."""
    path = Path(__file__).with_name(f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"_feed_helpers_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


pkg = _sibling("test_openwrt_package")
ROOT = pkg.ROOT
TSV = Path(__file__).with_name("data") / "openwrt-package-names.tsv"
SHARED_TSV = ROOT.parent / "shared" / "openwrt-userland" / "openwrt-package-names.tsv"
BRANCHES = ("openwrt-24.10", "openwrt-25.12", "master")

# Packages our recipes depend on that are not in the tsv (it covers lang/python and
# net/strongswan of openwrt/packages only), with where each is defined. All exist on 24.10,
# 25.12 and master.
CORE_PACKAGES = {
    # openwrt/openwrt package/kernel/linux/modules/*.mk (KernelPackage/<name without kmod->)
    "kmod-xfrm-interface": "openwrt/openwrt package/kernel/linux/modules/netsupport.mk",
    "kmod-ipsec6": "openwrt/openwrt package/kernel/linux/modules/netsupport.mk",
    "kmod-veth": "openwrt/openwrt package/kernel/linux/modules/netsupport.mk",
    "kmod-macvlan": "openwrt/openwrt package/kernel/linux/modules/netdevices.mk",
    "kmod-crypto-gcm": "openwrt/openwrt package/kernel/linux/modules/crypto.mk",
    # openwrt/openwrt package/network/utils/iproute2/Makefile (Package/ip-full)
    "ip-full": "openwrt/openwrt package/network/utils/iproute2/Makefile",
    # the luci feed: openwrt/luci modules/luci-base/Makefile
    "luci-base": "openwrt/luci modules/luci-base/Makefile",
}

# Standard-library modules that OpenWrt ships outside python3-light, and the python3
# sub-package holding them (openwrt/packages lang/python/python3/files/python3-package-*.mk).
# email: python3-email on 24.10 and 25.12, merged into python3-urllib on master; python3-urllib
# DEPENDS +python3-email on 24.10 and 25.12, so python3-urllib gives email on every branch.
STDLIB_SUBPACKAGES = {
    "asyncio": "python3-asyncio", "ctypes": "python3-ctypes", "logging": "python3-logging",
    "sqlite3": "python3-sqlite3", "ssl": "python3-openssl", "urllib": "python3-urllib",
    "email": "python3-urllib", "decimal": "python3-decimal", "fractions": "python3-decimal",
    "uuid": "python3-uuid", "unicodedata": "python3-codecs", "stringprep": "python3-codecs",
    "multiprocessing": "python3-multiprocessing", "xml": "python3-xml", "xmlrpc": "python3-xml",
    "unittest": "python3-unittest", "pydoc": "python3-pydoc", "doctest": "python3-pydoc",
    "lzma": "python3-lzma", "dbm": "python3-dbm", "curses": "python3-ncurses",
    "readline": "python3-readline", "venv": "python3-venv",
}
# what python3-package.mk installs into the router package of acp (Py3Package/acp/filespec)
ACP_EXCLUDED = ("lab",)


def tsv_names() -> dict[str, dict[str, str]]:
    """branch -> {package: version}"""
    names: dict[str, dict[str, str]] = {b: {} for b in BRANCHES}
    for line in TSV.read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        branch, name, version = line.split("\t")
        names[branch][name] = version
    return names


NAMES = tsv_names()


def _file_exists(path: str, branch: str) -> bool:
    """$(wildcard) of a file of an OpenWrt tree, from the facts we have."""
    m = re.fullmatch(r"<TOPDIR>/feeds/packages/lang/python/python3/files/"
                     r"python3-package-([a-z0-9-]+)\.mk", path)
    assert m, f"the test does not know whether {path} exists: teach _file_exists"
    # python3-package-<x>.mk defines python3-<x> (email.mk: python3-email, ...)
    return f"python3-{m.group(1)}" in NAMES[branch]


def expand(text: str, branch: str) -> str:
    """Make's expansion of the few functions a DEPENDS may use, innermost first."""
    innermost = re.compile(r"\$\(([^()$]*)\)")
    while m := innermost.search(text):
        expr = m.group(1)
        if expr == "TOPDIR":
            value = "<TOPDIR>"  # kept symbolic
        elif expr.startswith("wildcard "):
            value = " ".join(p for p in expr.split()[1:] if _file_exists(p, branch))
        elif expr.startswith("if "):
            cond, then, *other = expr[3:].split(",", 2)
            value = then if cond.strip() else (other[0] if other else "")
        else:
            raise AssertionError(f"the test cannot evaluate $({expr}): teach expand()")
        text = text[:m.start()] + value + text[m.end():]
    return text


def package_names(depends: str) -> set[str]:
    """The package names of an expanded DEPENDS: +pkg, pkg, +COND:pkg, +@SYM:pkg;
    @SYM / @!SYM are Kconfig conditions, not packages."""
    names = set()
    for word in depends.split():
        word = word.lstrip("+")
        if ":" in word:
            word = word.rsplit(":", 1)[1]
        elif word.startswith("@"):
            continue
        names.add(word.lstrip("+"))
    return names


def feed_depends() -> dict[tuple[str, str], str]:
    """(recipe directory, package) -> DEPENDS text (continuations joined, unexpanded), for
    every package every recipe of the feed defines (LUCI_DEPENDS for a luci.mk recipe)."""
    found = {}
    for directory in sorted(pkg.scanned_package_dirs()):
        r = pkg.recipe(directory)
        if "luci.mk" in r.text:
            found[(directory, Path(directory).name)] = r.variables.get("LUCI_DEPENDS", "")
            continue
        for define, body in r.defines.items():
            m = re.fullmatch(r"Package/([A-Za-z0-9._+-]+)", define)
            if m:
                found[(directory, m.group(1))] = " ".join(
                    v for v in re.findall(r"^\s*DEPENDS\s*\+?:?=\s*(.*)$", body, re.M))
    return found


def feed_packages() -> set[str]:
    """Every package name the feed builds (Package/<name>, the luci.mk package, and the
    <name>-src package Py3Package adds)."""
    names = set()
    for directory, package in feed_depends():
        names.add(package)
        if "Py3Package," in pkg.recipe(directory).text:
            names.add(f"{package}-src")
    return names


def test_tsv_is_the_shared_facts_file() -> None:
    assert set(NAMES) == set(BRANCHES) and all(len(NAMES[b]) > 400 for b in BRANCHES)
    if not SHARED_TSV.is_file():
        pytest.skip(f"{SHARED_TSV} not here (a checkout of the feed alone)")
    assert TSV.read_bytes() == SHARED_TSV.read_bytes(), \
        f"copy {SHARED_TSV} to {TSV} again (cp, verbatim)"


def test_every_recipe_of_the_feed_is_read() -> None:
    packages = {package for _, package in feed_depends()}
    assert set(pkg.FEED_PACKAGES.values()) <= packages
    assert all(text.strip() for (_, p), text in feed_depends().items()), \
        "a package without DEPENDS (python3-light at least)"


@pytest.mark.parametrize("branch", BRANCHES)
def test_every_depends_exists_on_the_branch(branch: str) -> None:
    available = set(NAMES[branch]) | feed_packages() | set(CORE_PACKAGES)
    missing = []
    for (directory, package), text in sorted(feed_depends().items()):
        for name in sorted(package_names(expand(text, branch))):
            if name not in available:
                missing.append(f"{directory}: {package} DEPENDS {name}")
    assert not missing, (f"not in the packages feed of {branch} ({TSV.name}), not built by "
                         f"this feed, not in CORE_PACKAGES:\n  " + "\n  ".join(missing))


def test_core_packages_are_used_and_not_in_the_packages_feed() -> None:
    used = set()
    for text in feed_depends().values():
        for branch in BRANCHES:
            used |= package_names(expand(text, branch))
    assert set(CORE_PACKAGES) <= used, f"unused: {sorted(set(CORE_PACKAGES) - used)}"
    for branch in BRANCHES:
        assert not set(CORE_PACKAGES) & set(NAMES[branch]), "then it is not a core package"


def test_conditional_depends_evaluate_per_branch() -> None:
    """The form a recipe would use for a name that differs between branches."""
    text = ("+python3-light $(if $(wildcard $(TOPDIR)/feeds/packages/lang/python/python3/"
            "files/python3-package-email.mk),+python3-email,+python3-urllib) @!SMALL_FLASH "
            "+IPV6:kmod-ipsec6 +@IPV6:kmod-veth")
    assert package_names(expand(text, "openwrt-24.10")) == {
        "python3-light", "python3-email", "kmod-ipsec6", "kmod-veth"}
    assert package_names(expand(text, "openwrt-25.12")) >= {"python3-email"}
    assert package_names(expand(text, "master")) == {
        "python3-light", "python3-urllib", "kmod-ipsec6", "kmod-veth"}
    with pytest.raises(AssertionError, match="teach"):
        expand("$(shell true)", "master")


def test_python3_email_is_gone_on_master_only() -> None:
    """Why no recipe may name python3-email (python3-urllib has email on every branch)."""
    assert "python3-email" in NAMES["openwrt-24.10"] and "python3-email" in NAMES["openwrt-25.12"]
    assert "python3-email" not in NAMES["master"]
    for branch in BRANCHES:
        assert "python3-urllib" in NAMES[branch]


def _acp_imports() -> dict[str, set[str]]:
    """top-level module -> files of src/acp_openwrt (as packaged) that import it"""
    src = ROOT / "src" / "acp_openwrt"
    imports: dict[str, set[str]] = {}
    for path in sorted(src.rglob("*.py")):
        rel = path.relative_to(src).as_posix()
        if any(rel == e or rel.startswith(e + "/") for e in ACP_EXCLUDED):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            else:
                continue
            for module in modules:
                imports.setdefault(module.split(".")[0], set()).add(rel)
    return imports


def test_acp_depends_name_the_stdlib_subpackages_it_imports() -> None:
    """acp depends on python3 (which pulls every sub-package), and names the sub-packages
    its own code imports as well, so that they stay if python3 is ever slimmed."""
    r = pkg.recipe("net/acp")
    deps = set()
    for branch in BRANCHES:
        deps |= package_names(expand(r.define_var("Package/acp", "DEPENDS"), branch))
    missing = {f"{STDLIB_SUBPACKAGES[m]} (import {m}: {sorted(files)[0]})"
               for m, files in _acp_imports().items()
               if m in STDLIB_SUBPACKAGES and STDLIB_SUBPACKAGES[m] not in deps}
    assert not missing, f"net/acp DEPENDS lacks: {sorted(missing)}"


@pytest.mark.parametrize("branch", BRANCHES)
def test_packages_feed_versions_fit_pyproject(branch: str) -> None:
    """pyproject.toml's ranges admit what each branch's packages feed ships (the feed's own
    PyPI recipes: test_pypi_recipes_fit_pyproject)."""
    own = {pypi for pypi in pkg.PYPI_RECIPES.values()}
    for requirement in pkg.pyproject()["project"]["dependencies"]:
        name = re.match(r"[A-Za-z0-9_.-]+", requirement).group(0).lower()
        if name in own:
            continue
        version = NAMES[branch].get(f"python3-{name}")
        assert version, f"{requirement}: no python3-{name} in the packages feed of {branch}"
        assert pkg.version_fits(version, requirement), \
            f"{branch} ships python3-{name} {version}, outside {requirement}"
