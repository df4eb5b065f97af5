"""What the tests, the simulator and the benchmarks use to run guardian nodes and misbehave among them.

  processes       nodes as real `guardian` processes on loopback: Cluster, NodeProc, eventually
  inprocess       a node run in the caller's trio nursery (node.app), with the guardians a test chooses
  peer            a roster member played by the test itself, over a real handshake
  adversary       misbehaving guardians, as the services' guardian factories
  adversary_node  the misbehaving guardian's node process: python -m node.testing.adversary_node
  network         an in-memory network of the protocol machines, on a fake clock
  certified       a ceremony export as a node writes it, custody certified, without running nodes
"""
