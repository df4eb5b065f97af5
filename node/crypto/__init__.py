"""ElectionGuard 2.1 mathematics: pure functions, no I/O, no clock.

Modules, from the bottom up:
  errors      typed errors for every kind of bad input
  params      the group parameters (spec 3.1.1) and their validation
  encoding    byte encodings of spec section 5.1 and the JSON hex form
  hashing     H, H_q and the named hashes H_P, H_B, H_E, H_G (spec 3.1, 5)
  group       membership checks for received values, single and batched
  fixed_base  window tables for bases used many times; multi-exponentiation
  dlog        discrete log of K^t for tallies (baby-step giant-step)
  elgamal     the base-K ElGamal of eq 31 and its homomorphic aggregation
  manifest    the election manifest in the 2.1 serialization format
  keys        guardian polynomials, commitments, key proofs, shares (3.2)
  range_proof disjunctive Chaum-Pedersen range proofs (3.3.5-3.3.8)
  ballot      ballot encryption, confirmation codes, chaining (3.3, 3.4)
  tally       aggregation of cast ballots (3.5)
  decryption  partial decryptions, their combination and proofs (3.6)
  ballot_signature  the one-time Ed25519 ballot signature (seed 003)
  challenged  opening challenged ballots through their nonce (3.6.7)
  batch       random-weight batch verification of many exponent equations at once
  sealing     passphrase sealing (Argon2id + XSalsa20-Poly1305)
"""
