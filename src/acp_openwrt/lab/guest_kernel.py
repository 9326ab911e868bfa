"""Debian's kernel, its modules and a busybox initramfs for the guest, built once and cached.

The host kernel has no ESP or xfrm interfaces, so the `vm` tier boots Debian's packaged kernel
under QEMU. Fetching and unpacking it takes a while; everything lands in a per-version cache
directory that appears only when complete (built aside, renamed at the end), so an interrupted
build never leaves a half cache behind.
"""
from __future__ import annotations

import gzip
import lzma
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from acp_openwrt.lab.guest_init import initramfs_init

DEFAULT_CACHE = Path("/var/cache/acp-lab")
META_PACKAGE = "linux-image-amd64"
BUSYBOX = Path("/bin/busybox")
# What the initramfs needs before it can reach the root filesystem (virtio-9p + overlay);
# their dependencies are found from modules.dep.
BOOT_MODULES = ("virtio_pci", "9pnet_virtio", "9p", "overlay")


class GuestUnavailable(Exception):
    """The guest cannot be had here: no qemu, no kernel package, no busybox-static, ..."""


@dataclass(frozen=True)
class GuestKernel:
    """A complete cache entry: what QEMU boots."""

    version: str
    kernel: Path
    initramfs: Path
    modules: Path  # shared into the guest as /lib/modules (holds `<version>/`)


def cache_root(env: Mapping[str, str] = os.environ) -> Path:
    return Path(env["ACP_LAB_CACHE"]) if env.get("ACP_LAB_CACHE") else DEFAULT_CACHE


def kernel_package_from_depends(text: str) -> str:
    """The versioned image package in `apt-cache depends linux-image-amd64` output."""
    for line in text.splitlines():
        m = re.match(r"\s*\|?Depends:\s*(linux-image-\d\S*)", line)
        if m:
            return m.group(1)
    raise GuestUnavailable(
        f"no versioned linux-image package in `apt-cache depends {META_PACKAGE}`")


def version_of_package(package: str) -> str:
    """linux-image-6.1.0-56-amd64 -> 6.1.0-56-amd64 (what `uname -r` says in the guest)."""
    version = package.removeprefix("linux-image-").removesuffix("-unsigned")
    if not re.fullmatch(r"\d+\.\d+[\w.+-]*", version):
        raise GuestUnavailable(f"cannot tell the kernel version of package {package!r}")
    return version


def module_name(path: str) -> str:
    """kernel/net/9p/9pnet-virtio.ko.xz -> 9pnet_virtio (the kernel's spelling)."""
    base = path.rsplit("/", 1)[-1]
    return re.sub(r"\.ko(\.(xz|gz|zst))?$", "", base).replace("-", "_")


def module_load_order(modules_dep: str, builtin: str, wanted: Iterable[str]) -> list[str]:
    """Module files (relative to the version dir) to insmod, dependencies first.

    Built-in modules are skipped; a wanted module that is neither built in nor a module is an
    error, since the guest could not boot without it.
    """
    deps: dict[str, tuple[str, list[str]]] = {}
    for line in modules_dep.splitlines():
        if ":" not in line:
            continue
        path, _, rest = line.partition(":")
        deps[module_name(path)] = (path.strip(), [module_name(d) for d in rest.split()])
    builtins = {module_name(line.strip()) for line in builtin.splitlines() if line.strip()}
    order: list[str] = []
    seen: set[str] = set()

    def visit(name: str, chain: tuple[str, ...]) -> None:
        if name in seen or name in builtins:
            return
        if name not in deps:
            raise GuestUnavailable(f"kernel lacks module {name} (needed by {' <- '.join(chain)})")
        if name in chain:
            raise GuestUnavailable(f"module dependency loop through {name}")
        path, needs = deps[name]
        for need in needs:
            visit(need, chain + (name,))
        seen.add(name)
        order.append(path)

    for name in wanted:
        visit(name.replace("-", "_"), ())
    return order


def is_static_elf(data: bytes) -> bool:
    """True for an ELF64 little-endian executable without a PT_INTERP (no dynamic loader)."""
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        return False
    phoff = int.from_bytes(data[0x20:0x28], "little")
    phentsize = int.from_bytes(data[0x36:0x38], "little")
    phnum = int.from_bytes(data[0x38:0x3A], "little")
    for i in range(phnum):
        entry = phoff + i * phentsize
        if int.from_bytes(data[entry:entry + 4], "little") == 3:  # PT_INTERP
            return False
    return True


def _run(argv: list[str], cwd: Path | None = None) -> str:
    """Run a build step; a failure becomes one line naming the step."""
    try:
        done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise GuestUnavailable(
            f"{argv[0]} not found (apt-get install kmod cpio dpkg apt)") from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        raise GuestUnavailable(f"{' '.join(argv[:2])} failed: {last}")
    return done.stdout


def resolve_version(root: Path) -> str:
    """The kernel version apt would install now; offline, the newest one already cached."""
    try:
        depends = _run(["apt-cache", "depends", META_PACKAGE])
        return version_of_package(kernel_package_from_depends(depends))
    except GuestUnavailable as apt_error:
        cached = sorted((p for p in root.glob("*") if _complete(p)),
                        key=lambda p: p.stat().st_mtime)
        if cached:
            return cached[-1].name
        raise apt_error


def _complete(entry: Path) -> bool:
    return not entry.name.startswith(".") and (entry / "initramfs.cpio").is_file()


def _entry(entry: Path, version: str) -> GuestKernel:
    return GuestKernel(version, entry / "vmlinuz", entry / "initramfs.cpio", entry / "modules")


def ensure_guest_kernel(root: Path | None = None) -> GuestKernel:
    """The cached kernel for the current Debian kernel version, building it on first use."""
    root = root if root is not None else cache_root()
    version = resolve_version(root)
    entry = root / version
    if _complete(entry):
        return _entry(entry, version)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise GuestUnavailable(
            f"cannot create cache {root}: {e.strerror} (set ACP_LAB_CACHE)") from None
    build = Path(tempfile.mkdtemp(prefix=f".build-{version}-", dir=root))
    try:
        _build(build, version)
        build.chmod(0o755)  # mkdtemp's 0700 would keep the cache private to its builder
        try:
            build.rename(entry)
        except OSError:
            if not _complete(entry):  # someone else won the race only if theirs is complete
                raise
    finally:
        shutil.rmtree(build, ignore_errors=True)
    return _entry(entry, version)


def _build(build: Path, version: str) -> None:
    package = f"linux-image-{version}"
    download = build / "download"
    download.mkdir()
    _run(["apt-get", "download", "-q", "-o", "APT::Sandbox::User=root", package], cwd=download)
    debs = list(download.glob("*.deb"))
    if len(debs) != 1:
        raise GuestUnavailable(f"apt-get download {package} gave {len(debs)} .deb files")
    unpacked = build / "unpacked"
    _run(["dpkg-deb", "-x", str(debs[0]), str(unpacked)])
    shutil.move(unpacked / "boot" / f"vmlinuz-{version}", build / "vmlinuz")
    for base in (unpacked / "lib" / "modules", unpacked / "usr" / "lib" / "modules"):
        if (base / version).is_dir():
            tree = build / "modules"
            tree.mkdir()
            shutil.move(base / version, tree / version)
            break
    else:
        raise GuestUnavailable(f"{package} holds no modules for {version}")
    shutil.rmtree(unpacked)
    shutil.rmtree(download)
    # depmod -b wants <base>/lib/modules/<version>; a symlink gives it that view of our tree.
    depmod_base = build / "depmod"
    (depmod_base / "lib").mkdir(parents=True)
    (depmod_base / "lib" / "modules").symlink_to(build / "modules")
    _run(["depmod", "-b", str(depmod_base), version])
    shutil.rmtree(depmod_base)
    _build_initramfs(build / "modules" / version, build / "initramfs.cpio")


def _read_module(path: Path) -> bytes:
    """busybox insmod wants plain ELF; Debian may ship .ko.xz (later releases) or .ko."""
    data = path.read_bytes()
    if path.suffix == ".xz":
        return lzma.decompress(data)
    if path.suffix == ".gz":
        return gzip.decompress(data)
    if path.suffix == ".zst":
        raise GuestUnavailable(f"{path.name}: zstd-compressed modules are not supported")
    return data


def _build_initramfs(moddir: Path, out: Path) -> None:
    busybox = BUSYBOX.read_bytes() if BUSYBOX.is_file() else b""
    if not is_static_elf(busybox):
        raise GuestUnavailable(f"{BUSYBOX} missing or not static: apt-get install busybox-static")
    if shutil.which("cpio") is None:
        raise GuestUnavailable("cpio not found: apt-get install cpio")
    order = module_load_order(
        (moddir / "modules.dep").read_text(),
        (moddir / "modules.builtin").read_text() if (moddir / "modules.builtin").exists() else "",
        BOOT_MODULES,
    )
    stage = out.parent / "initramfs"
    for sub in ("bin", "dev", "proc", "sys", "lower", "rw", "newroot", "modules"):
        (stage / sub).mkdir(parents=True)
    (stage / "bin" / "busybox").write_bytes(busybox)
    (stage / "bin" / "busybox").chmod(0o755)
    files = []
    for i, rel in enumerate(order):
        name = f"{i:02d}-{module_name(rel)}.ko"
        (stage / "modules" / name).write_bytes(_read_module(moddir / rel))
        files.append(name)
    (stage / "init").write_text(initramfs_init(files))
    (stage / "init").chmod(0o755)
    names = sorted(str(p.relative_to(stage)) for p in stage.rglob("*"))
    with open(out, "wb") as sink:
        done = subprocess.run(["cpio", "-o", "-H", "newc", "-R", "0:0", "--quiet"], cwd=stage,
                              input="\n".join(names).encode(), stdout=sink, stderr=subprocess.PIPE,
                              check=False)
    if done.returncode != 0 or out.stat().st_size < len(busybox):
        raise GuestUnavailable(
            f"cpio failed to write the initramfs: {done.stderr.decode().strip()}")
    shutil.rmtree(stage)
