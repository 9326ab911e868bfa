"""The pledge (RFC 8995 §5): enrolment through a join proxy, then LDevID renewal over the ACP.

core.py is the sans-I/O enrolment state machine; client.py and proxies.py its HTTPS edge;
renewal.py the EST re-enrolment; part.py the acpd part that drives them.
"""
