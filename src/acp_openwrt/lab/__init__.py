"""The test bench: a lab PKI, namespace topologies and the guest-kernel runner."""
