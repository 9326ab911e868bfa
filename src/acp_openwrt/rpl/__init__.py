"""RPL for the ACP (RFC 6550 storing mode, OF0, instance 0; the RFC 8994 §6.12.1 profile).

Sans-I/O: `messages`/`options` are the codec, `dodag.RplNode` the engine (events in, actions out,
time passed in), `routes` the desired route set the installer applies.
"""
from .options import RplDecodeError

__all__ = ["RplDecodeError"]
