"""The election record: ballots in, a record anyone can check out.

  codec       the record's objects as canonical JSON, both ways (pure)
  layout      the record directory: file names, atomic writes, index.json
  election    the election files of a record (Verifications 1-4) and the opened election
  encrypt     plaintext ballots to encrypted ballot files, in bulk, with device chaining
  ballot_box  verified, durable acceptance of cast and challenged ballots; the tally
  decrypted   joint decryptions to the decrypted tally and the opened challenged ballots
  local       in-process stand-ins for the guardians: key ceremony and decryption (tests, demo)
  custody_gate  the ceremony certificate as the gate of the election's commands; rehearsal.json
  start       a new record from a node's ceremony export (`guardian record init`)
The verifier is node/verifier; the commands are node/cli/record.py.

RECORD.md in this directory documents every file and field of a record.
"""
