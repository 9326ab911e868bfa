"""Certificate revocation (RFC 8994 §6.2.3 rule 3, §6.2.5.3): CRLs, their distribution point
over the ACP, and the node's keeper of the last good CRL."""
