"""The join proxy (RFC 8995 §4): a protocol-blind TCP relay between pledges in DULL and a
registrar in the ACP, run as its own unprivileged process.

Its process (entry.py -> process.py, with relay.py, registrars.py, sandbox.py, handover.py)
imports nothing from the pledge or the registrar, nor anything heavy: that is its security and
memory boundary, checked by tests/unit/test_brski_layout.py. part.py is acpd's side: it launches
the process and hands it its DULL sockets (SCM_RIGHTS, handover.py).
"""
