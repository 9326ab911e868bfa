"""The URIs and media types BRSKI (RFC 8995 §8.3) and EST (RFC 7030 §3.2.2) use."""
from __future__ import annotations

BRSKI = "/.well-known/brski"
EST = "/.well-known/est"

REQUEST_VOUCHER = f"{BRSKI}/requestvoucher"
VOUCHER_STATUS = f"{BRSKI}/voucher_status"
ENROLL_STATUS = f"{BRSKI}/enrollstatus"
REQUEST_AUDIT_LOG = f"{BRSKI}/requestauditlog"

CACERTS = f"{EST}/cacerts"
CSRATTRS = f"{EST}/csrattrs"
SIMPLE_ENROLL = f"{EST}/simpleenroll"
SIMPLE_REENROLL = f"{EST}/simplereenroll"

VOUCHER_CMS_JSON = "application/voucher-cms+json"
JSON = "application/json"
PKCS7_CERTS = "application/pkcs7-mime; smime-type=certs-only"
PKCS7 = "application/pkcs7-mime"
PKCS10 = "application/pkcs10"
CSRATTRS_TYPE = "application/csrattrs"
TEXT = "text/plain; charset=utf-8"

# id-kp-cmcRA: a registrar's (and an ACP EST server's) certificate must carry it.
ID_KP_CMC_RA = "1.3.6.1.5.5.7.3.28"
# id-pe-masa-url: the IDevID extension naming the manufacturer's MASA (IA5String).
ID_PE_MASA_URL = "1.3.6.1.5.5.7.1.32"
