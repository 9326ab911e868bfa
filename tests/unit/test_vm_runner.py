"""The guest runner's pure parts: package and module resolution, scripts, console, verdicts."""
from __future__ import annotations

import ast
import re
import struct
import subprocess
from pathlib import Path

import pytest

from acp_openwrt.lab.cli import EXIT_UNAVAILABLE, build_parser, main
from acp_openwrt.lab.guest_console import ConsoleFilter, Phase
from acp_openwrt.lab.guest_init import (
    GuestCommand,
    guest_environment,
    initramfs_init,
    run_script,
    shadows,
)
from acp_openwrt.lab.guest_kernel import (
    GuestKernel,
    GuestUnavailable,
    cache_root,
    is_static_elf,
    kernel_package_from_depends,
    module_load_order,
    module_name,
    version_of_package,
)
from acp_openwrt.lab.pytest_guest import headline, record, verdict_for
from acp_openwrt.lab.vm import qemu_argv

DEPENDS = """linux-image-amd64
  Depends: linux-image-6.1.0-56-amd64
"""

MODULES_DEP = """kernel/fs/overlayfs/overlay.ko:
kernel/fs/9p/9p.ko: kernel/net/9p/9pnet.ko kernel/fs/fscache/fscache.ko kernel/fs/netfs/netfs.ko
kernel/fs/fscache/fscache.ko: kernel/fs/netfs/netfs.ko
kernel/fs/netfs/netfs.ko:
kernel/net/9p/9pnet.ko:
kernel/net/9p/9pnet_virtio.ko: kernel/net/9p/9pnet.ko kernel/drivers/virtio/virtio.ko \
kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/virtio/virtio_pci.ko.xz: kernel/drivers/virtio/virtio.ko \
kernel/drivers/virtio/virtio_ring.ko
"""


def test_kernel_package_and_version() -> None:
    package = kernel_package_from_depends(DEPENDS)
    assert package == "linux-image-6.1.0-56-amd64"
    assert version_of_package(package) == "6.1.0-56-amd64"
    assert version_of_package("linux-image-6.12.9-amd64-unsigned") == "6.12.9-amd64"
    with pytest.raises(GuestUnavailable):
        kernel_package_from_depends("linux-image-amd64\n  Depends: firmware-linux\n")
    with pytest.raises(GuestUnavailable):
        version_of_package("linux-image-amd64")


def test_cache_root_is_overridable() -> None:
    assert cache_root({}) == Path("/var/cache/acp-lab")
    assert cache_root({"ACP_LAB_CACHE": "/tmp/c"}) == Path("/tmp/c")


def test_module_load_order_puts_dependencies_first() -> None:
    order = module_load_order(MODULES_DEP, "kernel/fs/overlayfs/overlay.ko\n",
                              ["virtio_pci", "9pnet_virtio", "9p", "overlay"])
    names = [module_name(p) for p in order]
    assert len(names) == len(set(names))
    assert "overlay" not in names  # built in
    for later, earlier in [("virtio_pci", "virtio"), ("virtio", "virtio_ring"), ("9p", "netfs"),
                           ("fscache", "netfs"), ("9p", "9pnet"), ("9pnet_virtio", "virtio")]:
        assert names.index(earlier) < names.index(later)
    assert "kernel/drivers/virtio/virtio_pci.ko.xz" in order


def test_module_load_order_names_what_is_missing() -> None:
    with pytest.raises(GuestUnavailable, match="xfrm_interface"):
        module_load_order(MODULES_DEP, "", ["xfrm-interface"])


def _elf(interp: bool) -> bytes:
    header = bytearray(64)
    header[:6] = b"\x7fELF\x02\x01"
    struct.pack_into("<QHH", header, 0x20, 64, 0, 0)
    struct.pack_into("<HH", header, 0x36, 56, 2)
    phdrs = struct.pack("<I52x", 1) + struct.pack("<I52x", 3 if interp else 1)
    return bytes(header) + phdrs


def test_static_elf_detection() -> None:
    assert is_static_elf(_elf(interp=False))
    assert not is_static_elf(_elf(interp=True))
    assert not is_static_elf(b"#!/bin/sh\n")


def test_console_filter_frames_the_command_output() -> None:
    con = ConsoleFilter("@@b@@", "@@e@@")
    stream = (b"SeaBIOS\r\nboot noise\r\n@@b@@\r\nhello\r\nworld\r\n\r\n@@e@@\r\n"
              b"reboot: Power down\r\n")
    out = b"".join(con.feed(stream[i:i + 3]) for i in range(0, len(stream), 3)) + con.close()
    assert out == b"hello\nworld\n"
    assert con.phase is Phase.DONE
    assert "boot noise" in con.log_tail() and "Power down" in con.log_tail()
    assert "hello" not in con.log_tail()


def test_console_filter_without_trailing_newline_and_without_begin() -> None:
    con = ConsoleFilter("@@b@@", "@@e@@")
    assert con.feed(b"@@b@@\nno newline\n@@e@@\n") == b"no newline"
    silent = ConsoleFilter("@@b@@", "@@e@@")
    assert silent.feed(b"\x1bc\x1b[2JKernel panic - not syncing") == b""
    assert silent.close() == b""
    assert silent.log_tail() == "Kernel panic - not syncing"


def test_guest_environment_selects_and_marks() -> None:
    env = guest_environment({"PATH": "/root/.pyenv/shims:/usr/bin", "SECRET_TOKEN": "x",
                             "ACP_LAB_CACHE": "/c", "ACP_DEBUG": "1"}, {"EXTRA": "y"})
    assert env["PATH"] == "/root/.pyenv/shims:/usr/bin"
    assert env["ACP_LAB_GUEST"] == "1" and env["ACP_LAB_OUT"] == "/run/acp-lab/out"
    assert env["ACP_DEBUG"] == "1" and env["EXTRA"] == "y" and env["HOME"] == "/root"
    assert "SECRET_TOKEN" not in env and "ACP_LAB_CACHE" not in env


def _command_line(script: str) -> str:
    (line,) = [line.strip() for line in script.splitlines() if line.strip().startswith("env -i")]
    return line


def test_run_script_quotes_argv_and_env_for_the_shell() -> None:
    code = "import os, sys; print(sys.argv[1:]); print(os.environ['X'])"
    argv = ("python3", "-c", code, "a b", "$HOME", "it's", "")
    cmd = GuestCommand(argv=argv, cwd="/work/main",
                       env={"PATH": "/usr/bin:/bin", "X": "$(id) `id`"}, nonce="abc")
    line = _command_line(run_script(cmd))
    done = subprocess.run(["sh", "-c", line], capture_output=True, text=True, check=True)
    printed, x = done.stdout.splitlines()
    assert ast.literal_eval(printed) == list(argv[3:])
    assert x == "$(id) `id`"


def test_run_script_shape() -> None:
    script = run_script(GuestCommand(argv=("true",), cwd="/work/main", nonce="n1"))
    assert script.startswith("#!/bin/sh\n")
    assert "cd /work/main" in script
    assert "tmpfs /tmp" in script and "tmpfs /dev/shm" in script and "devpts" in script
    assert "modprobe" in script and "esp6" in script and "xfrm_interface" in script
    assert "ip link set lo up" in script
    assert script.index("@@acp-lab:n1:begin@@") < script.index("env -i") < script.index(
        "@@acp-lab:n1:end@@") < script.index("/run/acp-lab/status") < script.index("sysrq")
    # A working directory under /tmp would vanish under a fresh tmpfs: leave /tmp alone then.
    assert "tmpfs /tmp" not in run_script(GuestCommand(argv=("true",), cwd="/tmp/x"))
    assert shadows("/tmp/x", "/tmp") and shadows("/tmp", "/tmp") and not shadows("/tmpfoo", "/tmp")


def test_initramfs_init_loads_modules_in_order_then_switches_root() -> None:
    init = initramfs_init(["00-virtio_ring.ko", "01-virtio.ko"])
    assert init.startswith("#!/bin/busybox sh\n")
    assert init.index("00-virtio_ring.ko") < init.index("01-virtio.ko") < init.index("hostroot")
    assert re.search(r"mount -t overlay .* /newroot", init)
    assert init.rstrip().endswith("exec switch_root /newroot /bin/sh /run/acp-lab/guest-run.sh")


def test_qemu_argv() -> None:
    kernel = GuestKernel("6.1.0-56-amd64", Path("/c/vmlinuz"), Path("/c/initramfs.cpio"),
                         Path("/c/modules"))
    argv = qemu_argv(kernel, Path("/tmp/run"), qemu="/usr/bin/qemu-system-x86_64")
    joined = " ".join(argv)
    assert argv[0] == "/usr/bin/qemu-system-x86_64"
    assert argv[argv.index("-accel") + 1] == "tcg" and "-enable-kvm" not in argv
    for flag in ("-m 2048", "-smp 2", "-nic none", "-device virtio-rng-pci", "-nographic",
                 "-no-reboot"):
        assert flag in joined
    assert argv[argv.index("-append") + 1].startswith("console=ttyS0 quiet panic=-1")
    shares = [argv[i + 1] for i, a in enumerate(argv) if a == "-virtfs"]
    assert [s.split("path=")[1].split(",")[0] for s in shares] == ["/", "/c/modules", "/tmp/run"]
    assert ["readonly=on" in s for s in shares] == [True, True, False]


def test_record_folds_phases() -> None:
    results: dict[str, dict[str, str]] = {}
    record(results, "t::a", "setup", "passed", "")
    record(results, "t::a", "call", "passed", "")
    record(results, "t::b", "setup", "skipped", "no root")
    record(results, "t::c", "call", "failed", "E   assert 1 == 2")
    record(results, "t::c", "teardown", "failed", "E   RuntimeError: cleanup")
    record(results, "t::d", "call", "xfailed", "known")
    assert results["t::a"]["outcome"] == "passed"
    assert results["t::b"] == {"outcome": "skipped", "text": "no root"}
    assert results["t::c"]["outcome"] == "failed"
    assert "(call)" in results["t::c"]["text"] and "(teardown)" in results["t::c"]["text"]
    assert results["t::d"]["outcome"] == "xfailed"
    assert headline(results["t::c"]["text"]) == "assert 1 == 2"


def test_verdicts_for_missing_results() -> None:
    assert verdict_for("t::a", None, "guest run failed: timeout").outcome == "failed"
    missing = verdict_for("t::x", {"collect:t": {"outcome": "failed", "text": "ImportError: y"}},
                          "")
    assert missing.outcome == "failed" and "ImportError: y" in missing.text
    assert verdict_for("t::a", {"t::a": {"outcome": "passed", "text": ""}}, "").outcome == "passed"


def test_cli_has_vm_subcommand_and_rejects_an_empty_command(
        capsys: pytest.CaptureFixture[str]) -> None:
    args = build_parser().parse_args(["vm", "--timeout", "5", "--", "uname", "-r"])
    assert args.subcommand == "vm" and args.timeout == 5.0 and args.command[-2:] == ["uname", "-r"]
    assert main(["vm", "--"]) == EXIT_UNAVAILABLE
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no command given" in err
