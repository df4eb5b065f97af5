"""Verification 8.E-8.G: each device's ordered list of ballots, and the chain of simple chaining."""

from __future__ import annotations

from node.crypto.ballot import SIMPLE_CHAINING, BallotChain
from node.crypto.election import ElectionContext
from node.record import layout
from node.record.election import Findings
from node.verifier.ballot_pass import Summary
from node.verifier.loader import Loaded


def check_devices(data: Loaded, ballots: dict[str, Summary], ctx: ElectionContext, found: Findings) -> None:
    """Every ballot listed once, under its device, in chain order; each chained device's closing hash."""
    by_device: dict[str, list[str]] = {}
    for bid, s in sorted(ballots.items()):
        by_device.setdefault(s.device, []).append(bid)
    if data.devices is None:
        if ballots:
            found.fail(data.error(layout.DEVICES))
        return
    listed: dict[str, str] = {}
    policy = data.params.ballot_chaining if data.params else "Allowed"
    for dev in data.devices[1]:
        found.items += 1
        where = f"device {dev.device!r}"
        if dev.chaining == "simple" and policy == "Prohibited":
            found.fail(f"{where}: uses simple chaining, which the election parameters prohibit")
        if dev.chaining == "none" and policy == "Required":
            found.fail(f"{where}: does not chain its ballots, which the election parameters require")
        chain = BallotChain(ctx.h_e, dev.device)
        broken = False
        for position, bid in enumerate(dev.ballots, start=1):
            if bid in listed:
                found.fail(f"ballot {bid!r}: listed under device {listed[bid]!r} and again under {dev.device!r}")
                continue
            listed[bid] = dev.device
            ballot = ballots.get(bid)
            if ballot is None:
                found.fail(f"{where}: lists ballot {bid!r}, which is not in the record")
                broken = True
                continue
            if ballot.device != dev.device:
                found.fail(f"ballot {bid!r}: encrypted on device {ballot.device!r} but listed under {dev.device!r}")
                continue
            if (ballot.chaining_field[:4] == SIMPLE_CHAINING) != (dev.chaining == "simple"):
                found.fail(f"ballot {bid!r}: its chaining mode differs from that of device {dev.device!r}")
                broken = True
                continue
            if dev.chaining == "simple" and not broken:
                if ballot.chaining_field != chain.next_field():                    # (8.E), (8.F) eqs 74-76
                    found.fail(f"ballot {bid!r}: chaining field is not 0x00000001 || H_(j-1) for position "
                               f"{position} on device {dev.device!r} (8.E)")
                    broken = True
                chain.advance(ballot.confirmation_code)
        if dev.chaining == "simple" and not broken and dev.closing_hash != chain.closing_hash():   # (8.G) eqs 77-78
            found.fail(f"{where}: closing hash is not H(H_E; 0x29, 0x00000001 || H(H_E; 0x2B, H_l, B_C,0)) (8.G)")
    for device, bids in sorted(by_device.items()):
        for bid in bids:
            if bid not in listed:
                found.fail(f"ballot {bid!r}: not in the ordered list of device {device!r} (devices.json)")
