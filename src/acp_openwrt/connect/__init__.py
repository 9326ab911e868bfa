"""ACP connect (RFC 8994 §8.1): a non-ACP device's management port brought into the ACP.

  config.py      `config connect` UCI sections -> ConnectConfig (+ ignore_patterns for links)
  addressing.py  the connect subnet (prefix, Manual Subnet-ID, or carved from Vlong), router
                 and relay addresses (pure)
  ra.py          Router Advertisement builder, RS parser, RA schedule (sans I/O)
  ra_sender.py   raw ICMPv6 socket per connect interface in the ACP namespace
  interface.py   netlink: move the device into ACP and back, addresses, sysctls, RPF rules
  relay.py       TCP/UDP relays from an ACP address to the IPv4 device (bounded, idle timeouts)
  part.py        ConnectPart, the acpd part
"""
