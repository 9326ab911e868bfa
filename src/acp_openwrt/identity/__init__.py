"""ACP identity: acp-node-names, ACP addresses, certificates and the domain membership check."""
