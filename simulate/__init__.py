"""Network simulation for guardian nodes: real `guardian run` processes behind fault-injecting relays.

simulate.relay holds the TCP relay (one per link between two guardians) and the
RelayMesh that puts one between every pair of nodes.
"""
