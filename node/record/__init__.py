"""The election record: ballots in, a record anyone can check out.

  codec       the record's objects as canonical JSON, both ways (pure)
  layout      the record directory: file names, atomic writes, index.json
  ballot_box  verified, durable acceptance of cast and challenged ballots; the tally
  verifier    the independent verifier, one named step per verification of spec section 6
  local       in-process stand-ins for the guardians: key ceremony and decryption (tests, demo)
  commands    `guardian election|encrypt|ballots|tally|verify`

RECORD.md in this directory documents every file and field of a record.
"""
