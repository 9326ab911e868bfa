"""The OpenWrt feed checked without an OpenWrt tree: what scripts/feeds would find, the recipes'
variables, DEPENDS against what the code imports and loads, every installed file present,
apk-safe versions, feeds.conf.example syntax. What only a real build shows is in docs/openwrt.md."""
from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from acp_openwrt.channels.strongswan_conf import DEFAULT_PLUGINS

ROOT = Path(__file__).resolve().parents[2]
FEED_PACKAGES = {"net/acp": "acp", "lang/python/python-cbor2": "python3-cbor2",
                 "lang/python/python-vici": "python3-vici", "luci/luci-app-acp": "luci-app-acp"}
# the feed's own PyPI recipes: directory -> PyPI name (lang/python/python-<pypi>)
PYPI_RECIPES = {d: d.rsplit("/", 1)[1].removeprefix("python-") for d in FEED_PACKAGES
                if d.startswith("lang/python/")}
# apk-tools' version grammar; OpenWrt 25.12 versions a package as PKG_VERSION-rPKG_RELEASE
APK_VERSION = re.compile(r"[0-9]+(\.[0-9]+)*[a-z]?(_(alpha|beta|pre|rc|cvs|svn|git|hg|p)[0-9]*)*"
                         r"-r[0-9]+")
# include/scan.mk: a feed directory is a package when its Makefile matches this
SCAN_SIGNATURE = re.compile(r"call (Build/DefaultTargets|Build(Package|Target)|.+Package)")
SCAN_DEPTH = 5
# the Python and system packages acp needs (no python3-ubus: acpd speaks ubus itself)
REQUIRED_DEPENDS = {"python3", "python3-pyroute2", "python3-cryptography",
                    "python3-cbor2", "strongswan-charon", "strongswan-mod-vici",
                    "strongswan-mod-kernel-netlink", "strongswan-swanctl", "kmod-xfrm-interface",
                    "kmod-ipsec6", "kmod-macvlan", "kmod-veth", "ip-full"}
FEED_KINDS = ("src-git", "src-git-full", "src-link", "src-cpy", "src-svn", "src-hg", "src-bzr",
              "src-darcs")


class Recipe:
    """Variables (`A:=b`, continuations joined) and `define X ... endef` blocks of a Makefile."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.text = path.read_text()
        self.variables: dict[str, str] = {}
        self.defines: dict[str, str] = {}
        lines = self.text.replace("\\\n", " ").splitlines()
        block: list[str] | None = None
        name = ""
        for line in lines:
            if block is not None:
                if line.strip() == "endef":
                    self.defines[name], block = "\n".join(block), None
                else:
                    block.append(line)
                continue
            if line.startswith("define "):
                name, block = line.split(None, 1)[1].strip(), []
                continue
            m = re.match(r"([A-Za-z0-9_./-]+)\s*[:?+]?=\s*(.*)$", line)
            if m and not line.startswith("\t"):
                self.variables[m.group(1)] = m.group(2).strip()

    def define_var(self, define: str, var: str) -> str:
        m = re.search(rf"^\s*{var}\s*:?=\s*(.*)$", self.defines[define], re.M)
        assert m, f"{self.path}: {var} missing in define {define}"
        return m.group(1)


def recipe(directory: str) -> Recipe:
    return Recipe(ROOT / directory / "Makefile")


def depends(text: str) -> set[str]:
    return {word.lstrip("+") for word in text.split() if word.startswith("+")}


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def scanned_package_dirs() -> set[str]:
    """The directories scripts/feeds (include/scan.mk) takes for packages, relative to ROOT."""
    found = set()
    for makefile in ROOT.rglob("Makefile"):
        rel = makefile.relative_to(ROOT)
        if ".git" in rel.parts or len(rel.parts) > SCAN_DEPTH:
            continue
        if SCAN_SIGNATURE.search(makefile.read_text()):
            found.add(str(rel.parent))
    return found


def version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.match(r"[0-9]+(\.[0-9]+)*", version).group(0).split("."))


def version_fits(version: str, spec: str) -> bool:
    """Whether `version` satisfies the comparisons of a requirement such as "cbor2>=5.4,<7"."""
    v_full = version_tuple(version)
    for op, bound in re.findall(r"(>=|<=|<|>|==)\s*([0-9.]+)", spec):
        b = version_tuple(bound)
        v = v_full[:len(b)] if op in ("<", "==") else v_full
        if not {">=": v >= b, "<=": v <= b, "<": v < b, ">": v > b, "==": v == b}[op]:
            return False
    return True


def test_scripts_feeds_finds_exactly_our_packages() -> None:
    found = scanned_package_dirs()
    assert found == set(FEED_PACKAGES), "scripts/feeds would see these package directories"
    assert "." not in found  # a root recipe is not scanned (and must not pretend to be one)


@pytest.mark.parametrize("directory", sorted(FEED_PACKAGES))
def test_recipe_basics(directory: str) -> None:
    r = recipe(directory)
    includes = re.findall(r"^include (\S+)", r.text, re.M)
    assert includes and includes[0] == "$(TOPDIR)/rules.mk"
    for var in ("PKG_VERSION", "PKG_RELEASE", "PKG_LICENSE", "PKG_MAINTAINER"):
        assert r.variables.get(var), f"{directory}: {var} not set"
    version = f"{r.variables['PKG_VERSION']}-r{r.variables['PKG_RELEASE']}"
    assert APK_VERSION.fullmatch(version), f"{directory}: {version} is not an apk version"
    package = FEED_PACKAGES[directory]
    if package.startswith("luci-app-"):
        assert "include $(TOPDIR)/feeds/luci/luci.mk" in r.text
        assert "# call BuildPackage" in r.text  # luci.mk builds it; scan.mk needs the signature
        assert "+acp" in r.variables["LUCI_DEPENDS"].split()
    else:
        assert f"Package/{package}" in r.defines and r.define_var(f"Package/{package}", "TITLE")
        assert f"$(eval $(call BuildPackage,{package}))" in r.text
        assert "include $(TOPDIR)/feeds/packages/lang/python/python3-package.mk" in r.text


def test_acp_depends_cover_issue_imports_and_charon_plugins() -> None:
    r = recipe("net/acp")
    deps = depends(r.define_var("Package/acp", "DEPENDS"))
    assert REQUIRED_DEPENDS <= deps, f"missing: {sorted(REQUIRED_DEPENDS - deps)}"
    # every Python dependency of the project is an OpenWrt package of the same name
    for requirement in pyproject()["project"]["dependencies"]:
        name = re.match(r"[A-Za-z0-9_.-]+", requirement).group(0).lower()
        assert f"python3-{name}" in deps, f"{requirement} has no python3-{name} in DEPENDS"
    # every plugin acpd's strongswan.conf loads is installed (nonce is in strongswan itself)
    for plugin in DEFAULT_PLUGINS:
        if plugin != "nonce":
            assert f"strongswan-mod-{plugin}" in deps, f"charon loads {plugin}"


def test_acp_version_matches_pyproject_and_conffiles() -> None:
    r = recipe("net/acp")
    assert r.variables["PKG_VERSION"] == pyproject()["project"]["version"]
    conffiles = r.defines["Package/acp/conffiles"].split()
    assert "/etc/config/acp" in conffiles and "/etc/acp/" in conffiles


def test_acp_installs_only_files_that_exist() -> None:
    r = recipe("net/acp")
    prepared = re.findall(r"\$\(ACP_SOURCE_DIR\)/(\S+)", r.defines["Build/Prepare"])
    assert {"pyproject.toml", "src", "files", "uci-defaults"} <= set(prepared)
    for item in prepared:
        assert (ROOT / item).exists(), f"Build/Prepare copies {item}, which does not exist"
    install = r.defines["Py3Package/acp/install"]
    sources = re.findall(r"\$\(PKG_BUILD_DIR\)/(\S+)", install)
    assert len(sources) >= 4
    for src in sources:
        assert src.split("/")[0] in prepared, f"{src} is not copied by Build/Prepare"
        assert (ROOT / src).is_file(), f"the recipe installs {src}, which does not exist"
    scripts = pyproject()["project"]["scripts"]
    for binary in re.findall(r"\$\(PKG_INSTALL_DIR\)/usr/bin/(\S+)", install):
        assert binary in scripts, f"{binary} is not a console script of pyproject.toml"
    assert "acp-lab" not in install  # the test bench stays out of the router package
    # executables really are executable in the repository (INSTALL_BIN keeps nothing else)
    for src in ("files/acp.init", "uci-defaults/90-acp"):
        assert (ROOT / src).stat().st_mode & 0o111


def test_acp_removal_takes_the_code_cache_acpd_wrote() -> None:
    from acp_openwrt.code_cache import cache_path
    postrm = recipe("net/acp").defines["Package/acp/postrm"]
    assert postrm.startswith("#!/bin/sh")
    written = cache_path(Path("/x/acp_openwrt/__pycache__")).name
    pattern = re.search(r'acp_openwrt/__pycache__/([\w.-]+)"\*', postrm)
    assert pattern is not None and written.startswith(pattern.group(1))


@pytest.mark.parametrize("directory,pypi", sorted(PYPI_RECIPES.items()))
def test_pypi_recipes_fit_pyproject(directory: str, pypi: str) -> None:
    r = recipe(directory)
    assert r.variables["PYPI_NAME"] == pypi
    assert re.fullmatch(r"[0-9a-f]{64}", r.variables["PKG_HASH"])
    assert r.variables["PKG_NAME"] == f"python-{pypi}"
    assert "include $(TOPDIR)/feeds/packages/lang/python/pypi.mk" in r.text
    # the packaged version satisfies the project's range (e.g. "cbor2>=5.4,<7")
    # (the packages feed's versions, per branch: test_openwrt_feed_depends.py)
    spec = next(d for d in pyproject()["project"]["dependencies"] if d.startswith(pypi))
    assert version_fits(r.variables["PKG_VERSION"], spec), \
        f"{pypi} {r.variables['PKG_VERSION']} outside {spec}"


def test_feeds_conf_example_parses() -> None:
    feeds = {}
    for line in (ROOT / "feeds.conf.example").read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        kind, name, location = line.split()
        assert kind in FEED_KINDS and re.fullmatch(r"[A-Za-z0-9_-]+", name), line
        feeds[name] = (kind, location)
    assert {"packages", "luci", "acp"} <= set(feeds)  # the recipes include files from the first two
    kind, location = feeds["acp"]
    assert kind != "src-link" or location.startswith("/")


def test_workflow_builds_every_package_of_the_feed() -> None:
    """.github/workflows/openwrt.yml (the SDK build + QEMU image check) names exactly the
    packages the feed defines, and runs the QEMU check script that exists."""
    import re
    root = Path(__file__).resolve().parents[2]
    workflow = (root / ".github" / "workflows" / "openwrt.yml").read_text()
    [line] = re.findall(r"^\s*PACKAGES:\s*(.+)$", workflow, flags=re.M)
    defined = set()
    for makefile in root.glob("*/**/Makefile"):
        text = makefile.read_text()
        defined |= set(re.findall(r"^define Package/([A-Za-z0-9._-]+)\s*$", text, flags=re.M))
        if "luci.mk" in text:
            defined.add(makefile.parent.name)
    assert set(line.split()) == defined
    [script] = re.findall(r"sh (\.github/\S+\.sh)", workflow)
    assert (root / script).is_file()
