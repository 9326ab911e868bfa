"""BRSKI (RFC 8995): vouchers, the pledge, the registrar with its CA and EST, renewal.

Sans-I/O cores (voucher, cms, csr, allocation, the pledge state machine) with thin asyncio
edges (http, tls, registrar server, pledge service). The join proxy (proxy*.py) is a separate,
protocol-blind TCP relay.
"""
