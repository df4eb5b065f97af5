"""Sans-I/O protocol: envelopes, the link handshake, the inbound filter and (later) the ceremony and
decryption state machines. Input: bytes or messages; output: bytes to send and decisions. No sockets,
no trio, no files, no clock (callers pass the time in).
"""
