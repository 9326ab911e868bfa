"""What a running acpd holds (issue 19's memory budget), read from its /proc/PID/maps: neither
an idle pledge nor an enrolled node loads any OpenSSL (not ssl, hashlib's libcrypto or
cryptography): the pledge's IDevID is checked in a short-lived process, TLS is only for BRSKI
work, and an enrolled node reads and checks certificates, keys and CRLs with the parse-only
readers (identity/cert_reader.py, signature.py, key_reader.py). The import-level twin is
tests/unit/test_acpd_lean_imports.py; this one also sees what the parts import while they
run."""
from __future__ import annotations

from pathlib import Path

from acp_openwrt.lab.acpd_lab import AcpdLab

PYTHON_OPENSSL = ("/_ssl.", "/_hashlib.")  # the ssl and hashlib modules' own
OPENSSL = (*PYTHON_OPENSSL, "/libssl.", "/libcrypto.", "/cryptography/")


def mapped(lab: AcpdLab, name: str, markers: tuple[str, ...]) -> list[str]:
    (pid,) = lab.pids(name, "acpd")
    paths = {line.split()[-1] for line in Path(f"/proc/{pid}/maps").read_text().splitlines()
             if len(line.split()) > 5}
    return sorted(p for p in paths if any(m in p for m in markers))


def test_neither_an_idle_pledge_nor_an_enrolled_node_holds_openssl(lab: AcpdLab) -> None:
    lab.start_masa("n1")
    lab.make_pledge("n1")
    lab.enrol("n2")
    lab.start_all(["n1"])  # alone: a pledge next to an ACP node loads the BRSKI work ahead
    try:
        lab.wait("n1 pledging", lambda: lab.ask("n1", "brski")["state"] == "pledging", 20)
        assert mapped(lab, "n1", OPENSSL) == []
        lab.start_all(["n2"])
        lab.wait("n2's parts up", lambda: {"channels", "discovery", "brski"}
                 <= set(lab.ask("n2", "status")["parts"]), 20)
        assert mapped(lab, "n2", OPENSSL) == []
    except BaseException:
        print(lab.logs())
        raise


SQLITE = ("/libsqlite3.", "/_sqlite3.")


def test_a_registrar_nodes_acpd_holds_none_of_it_and_its_worker_heals(tmp_path: Path) -> None:
    """Issue 19, registrar node: the TLS, CMS, signing and allocations.db work runs in the
    registrar worker (brski/registrar/worker.py), so acpd maps neither OpenSSL, cryptography
    nor sqlite before, during or after an enrolment; a killed worker is counted and the next
    pledge enrols through a new one; once idle, the worker leaves."""
    import os
    import signal

    from acp_openwrt.lab.topology import star
    lab = AcpdLab(star(3), tmp_path).up()
    try:
        lab.registrar_and_pledges("n1", "n2")
        lab.wait("n2 enrolled through n1", lambda: lab.enrolled("n2"), 60)
        assert mapped(lab, "n1", OPENSSL + SQLITE) == []
        status = lab.ask("n1", "registrar")
        assert status["enrolled"] == 1 and status["worker"]["crashes"] == 0
        (worker,) = lab.pids("n1", "registrar_worker")
        assert worker == status["worker"]["pid"]
        worker_maps = Path(f"/proc/{worker}/maps").read_text()
        assert "/libssl." in worker_maps and "/libsqlite3." in worker_maps
        os.kill(worker, signal.SIGKILL)
        lab.wait("the crash noticed", lambda: lab.ask("n1", "registrar")["worker"]["crashes"],
                 20)
        assert "exit -9" in lab.ask("n1", "registrar")["worker"]["last_error"]
        lab.make_pledge("n3")
        lab.start_all(["n3"])
        lab.wait("n3 enrolled through a new worker", lambda: lab.enrolled("n3"), 60)
        status = lab.ask("n1", "registrar")
        assert status["enrolled"] == 2 and status["worker"]["starts"] >= 2
        assert status["counters"]["simpleenroll 200"] == 2
        lab.wait("the idle worker left",
                 lambda: lab.ask("n1", "registrar")["worker"]["processes"] == 0, 90)
        assert lab.pids("n1", "registrar_worker") == []
        assert mapped(lab, "n1", OPENSSL + SQLITE) == []
        assert lab.ask("n1", "registrar")["worker"]["last_exit"] == 0
    except BaseException:
        print(lab.logs())
        raise
    finally:
        lab.close()
