"""The registrar (RFC 8995 §5, RFC 8994 §6.11.7): vouchers via the MASA, the domain CA, EST
enrolment and renewal, address allocation, backup and restore; part.py is its acpd part.
"""
