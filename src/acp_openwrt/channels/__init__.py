"""Secure channels (RFC 8994 §6.6-§6.8): one IKEv2/IPsec channel per neighbour.

Layers, each its own module:
  peer_channel.py    sans-I/O per-peer state machine (Decider/Follower, backoff, duplicates)
  connection.py      what a channel asks of the IKE daemon (names, VICI connection dict)
  ike_identity.py    which IKE identity our certificate can carry (ID_IPV6_ADDR, fallbacks)
  peer_check.py      the §6.2.3 membership check applied to an SA's peer certificate
  driver.py          the small IKE-daemon interface (a pluto driver would implement it too)
  vici_driver.py     that interface over strongSwan's VICI
  strongswan_conf.py the private strongswan.conf of one node's charon
  charon.py          starts, watches and restarts charon inside the DULL namespace
  xfrm_interface.py  the per-peer xfrm interfaces, routes and the ACP loopback address
  service.py         ChannelPart: adjacency events in, channels and ChannelUp/Down out
"""
