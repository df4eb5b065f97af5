"""The independent verifier of an election record (design spec section 6).

Each verification step returns a StepResult: the step's name, pass / FAIL / n/a,
how many items it checked, the time it took and, for each failure, a message
that names the object at fault (guardian, ballot, contest, option). Nothing in
the record that can be recomputed is trusted: H_P, H_B, K, K-hat, H_E, H_I,
contest hashes, confirmation codes, chain hashes and the aggregate are
recomputed and compared, and the recomputed values are the ones used by the
later steps. The per-ballot checks run on every core; the decryption proofs are
checked in batches (node.crypto.batch).

  registry      @step: each step's number and name, its accumulator, timer and preconditions
  loader        the record as read, with the reason for each object that could not be
  parameters    Verifications 1-4: the election (checks from node.record.election)
  ballot_checks the checks of one ballot: the process pool's task
  ballots       Verifications 5-8 and the ballot signatures, over every ballot
  chains        Verification 8.E-8.G: each device's ballots and chain
  decryptions   joint decryptions and their proofs, batched (Verifications 10, 13)
  tally         Verifications 9-12: aggregation, tally decryption and contents
  challenged    Verifications 13-14: challenged ballots
  record_index  index.json and the ballot box journal
  report        the report: table or JSON, with warnings
  verify        verify_record: every step on one record
"""

from node.verifier.registry import STEP_NUMBER, StepResult, registered
from node.verifier.report import Report, format_table, passed, results_to_json
from node.verifier.verify import verify_record

STEPS: tuple[tuple[str, str], ...] = tuple((s.number, s.name) for s in registered())

__all__ = ["STEPS", "STEP_NUMBER", "Report", "StepResult", "format_table", "passed", "results_to_json",
           "verify_record"]
