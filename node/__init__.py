"""guardian-node: a peer-to-peer guardian node for ElectionGuard 2.1 elections."""

__version__ = "0.1.0"
