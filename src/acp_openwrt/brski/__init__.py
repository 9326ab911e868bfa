"""BRSKI (RFC 8995): vouchers, the pledge, the registrar with its CA and EST, renewal.

One subpackage per role: pledge/, proxy/ (the join proxy, a separate process) and registrar/.
The modules here are shared by the pledge and the registrar: vouchers, CMS, CSRs, HTTP, TLS,
the identity store and atomic file switching.
"""
