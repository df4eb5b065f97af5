"""Scenarios: what the simulator runs and what it must observe, from a TOML file (see scenarios/README.md).

A scenario is an election (n, k, ballots, timeouts), the faults to inject and when, an optional
misbehaving guardian, and the expected outcome. Every key is checked; a misspelt key or a value out
of range is an error naming the file and the key, never a silently different run.
"""

from __future__ import annotations

import random
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from node.crypto.errors import InputError

PROCESS_ACTIONS = ("kill", "restart", "stop", "start", "pause", "resume")
LINK_ACTIONS = ("partition", "heal", "delay", "corrupt", "garbage", "duplicate", "drop", "reorder", "slow")
NODE_LINK_ACTIONS = ("isolate",)
ACTIONS = PROCESS_ACTIONS + LINK_ACTIONS + NODE_LINK_ACTIONS
CEREMONY_PHASES = ("keys", "echo", "shares", "check", "complaints", "result")
WHEN = (("start",) + tuple(f"ceremony:{p}" for p in CEREMONY_PHASES) + ("custody", "ballots", "decryption:start")
        + tuple(f"decryption:{s}" for s in ("shares", "commitments", "responses", "stalled")))
BEHAVIOURS = ("bad-share", "equivocate", "bad-proof", "wrong-decryption", "replay", "garbage-frames", "flood")
CEREMONY_OUTCOMES = ("complete", "aborted", "refused")
DECRYPTION_OUTCOMES = ("complete", "stalled", "refused", "none")


class ScenarioError(InputError):
    """A scenario file is malformed: the message names the file and the key."""


@dataclass(frozen=True)
class Fault:
    when: str
    action: str
    guardian: int | None = None          # process actions, isolate
    link: tuple[int, int] | None = None  # link actions
    seconds: float = 0.0                 # pause / partition / isolate: undone after this long; kill: restart after
    value: float = 0.0                   # delay seconds, probabilities, garbage bytes, bytes/s

    def describe(self) -> str:
        who = f"g{self.guardian}" if self.guardian else f"link g{self.link[0]}-g{self.link[1]}" if self.link else ""
        extra = f" for {self.seconds:g} s" if self.seconds else ""
        value = f" {self.value:g}" if self.value else ""
        return f"{self.action}{value} {who}{extra} at {self.when}".replace("  ", " ")


@dataclass(frozen=True)
class Adversary:
    guardian: int
    behaviour: str
    victim: int | None = None


@dataclass(frozen=True)
class Expect:
    ceremony: str = "complete"
    culprits: tuple[int, ...] = ()
    decryption: str = "complete"
    missing: tuple[int, ...] = ()
    excluded: tuple[int, ...] = ()
    verified: bool = True
    refusals: tuple[str, ...] = ()       # refusal reasons some node must have counted (e.g. "replay")
    exact_missing: bool = True           # False: at least `missing` (a fault may cost a round, and name more)


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    guardians: int
    quorum: int
    ballots: int = 3
    challenged: int = 1
    phase_timeout: float = 20.0
    timeout: float = 15.0
    custody: bool = True
    compensated: bool = False
    missing_at_decryption: tuple[int, ...] = ()
    wrong_roster: int | None = None
    faults: tuple[Fault, ...] = ()
    adversary: Adversary | None = None
    expect: Expect = field(default_factory=Expect)
    seed: int = 0


_TOP = {"description", "guardians", "quorum", "ballots", "challenged", "phase_timeout", "timeout", "custody",
        "compensated", "missing_at_decryption", "wrong_roster", "fault", "adversary", "expect", "seed"}


def load_scenario(path: Path) -> Scenario:
    try:
        doc = tomllib.loads(Path(path).read_text())
    except OSError as e:
        raise ScenarioError(f"cannot read the scenario {path}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ScenarioError(f"{path}: not valid TOML: {e}") from None
    return parse_scenario(doc, Path(path).stem, str(path))


def parse_scenario(doc: dict, name: str, where: str) -> Scenario:
    unknown = set(doc) - _TOP
    if unknown:
        raise ScenarioError(f"{where}: unknown keys {sorted(unknown)}")
    n = _int(doc, "guardians", where, 2, 12, None)
    k = _int(doc, "quorum", where, 1, n, None)

    def guardian(value, what):
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= n:
            raise ScenarioError(f"{where}: {what} must be a guardian number in 1..{n}, got {value!r}")
        return value

    def guardians(key, table=doc, what=None):
        value = table.get(key, [])
        if not isinstance(value, list):
            raise ScenarioError(f"{where}: {what or key} must be a list of guardian numbers")
        return tuple(sorted({guardian(v, what or key) for v in value}))

    ballots = _int(doc, "ballots", where, 1, 1000, 3)
    challenged = _int(doc, "challenged", where, 0, ballots - 1, 1)
    faults = []
    for i, f in enumerate(doc.get("fault", []), 1):
        here = f"{where} [[fault]] #{i}"
        if not isinstance(f, dict) or set(f) - {"when", "action", "guardian", "link", "seconds", "value"}:
            raise ScenarioError(f"{here}: keys are when, action, guardian, link, seconds, value")
        if f.get("when") not in WHEN:
            raise ScenarioError(f"{here}: when must be one of {', '.join(WHEN)}")
        if f.get("action") not in ACTIONS:
            raise ScenarioError(f"{here}: action must be one of {', '.join(ACTIONS)}")
        action = f["action"]
        g = guardian(f["guardian"], f"{here} guardian") if "guardian" in f else None
        link = None
        if "link" in f:
            pair = f["link"]
            if not isinstance(pair, list) or len(pair) != 2 or pair[0] == pair[1]:
                raise ScenarioError(f"{here}: link must be two different guardian numbers")
            link = tuple(sorted(guardian(x, f"{here} link") for x in pair))
        if action in PROCESS_ACTIONS + NODE_LINK_ACTIONS and g is None:
            raise ScenarioError(f"{here}: {action} needs a guardian")
        if action in LINK_ACTIONS and link is None:
            raise ScenarioError(f"{here}: {action} needs a link = [i, j]")
        seconds, value = _num(f, "seconds", here, 0, 3600), _num(f, "value", here, 0, 10**9)
        faults.append(Fault(f["when"], action, g, link, seconds, value))
    adversary = None
    if "adversary" in doc:
        a = doc["adversary"]
        here = f"{where} [adversary]"
        if not isinstance(a, dict) or set(a) - {"guardian", "behaviour", "victim"} or "behaviour" not in a:
            raise ScenarioError(f"{here}: keys are guardian, behaviour, victim")
        if a["behaviour"] not in BEHAVIOURS:
            raise ScenarioError(f"{here}: behaviour must be one of {', '.join(BEHAVIOURS)}")
        adversary = Adversary(guardian(a.get("guardian"), f"{here} guardian"), a["behaviour"],
                              guardian(a["victim"], f"{here} victim") if "victim" in a else None)
    e = doc.get("expect", {})
    here = f"{where} [expect]"
    if not isinstance(e, dict) or set(e) - {"ceremony", "culprits", "decryption", "missing", "missing_exact",
                                            "excluded", "verified", "refusals"}:
        raise ScenarioError(f"{here}: keys are ceremony, culprits, decryption, missing, missing_exact, excluded, "
                            f"verified, refusals")
    if e.get("ceremony", "complete") not in CEREMONY_OUTCOMES:
        raise ScenarioError(f"{here}: ceremony must be one of {', '.join(CEREMONY_OUTCOMES)}")
    if e.get("decryption", "complete") not in DECRYPTION_OUTCOMES:
        raise ScenarioError(f"{here}: decryption must be one of {', '.join(DECRYPTION_OUTCOMES)}")
    refusals = e.get("refusals", [])
    if not isinstance(refusals, list) or not all(isinstance(r, str) for r in refusals):
        raise ScenarioError(f"{here}: refusals must be a list of reasons")
    expect = Expect(e.get("ceremony", "complete"), guardians("culprits", e, f"{here} culprits"),
                    e.get("decryption", "complete"), guardians("missing", e, f"{here} missing"),
                    guardians("excluded", e, f"{here} excluded"), _bool(e, "verified", here, True), tuple(refusals),
                    _bool(e, "missing_exact", here, True))
    wrong = guardian(doc["wrong_roster"], f"{where} wrong_roster") if "wrong_roster" in doc else None
    description = doc.get("description", "")
    if not isinstance(description, str):
        raise ScenarioError(f"{where}: description must be text")
    return Scenario(name, description.strip(), n, k, ballots, challenged,
                    _num(doc, "phase_timeout", where, 2, 3600, 20.0), _num(doc, "timeout", where, 1, 3600, 15.0),
                    _bool(doc, "custody", where, True), _bool(doc, "compensated", where, False),
                    guardians("missing_at_decryption"), wrong, tuple(faults), adversary, expect,
                    _int(doc, "seed", where, 0, 2**63 - 1, 0))


def _int(doc: dict, key: str, where: str, low: int, high: int, default: int | None) -> int:
    value = doc.get(key, default)
    if value is None:
        raise ScenarioError(f"{where}: missing key {key!r}")
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ScenarioError(f"{where}: {key} must be a whole number in {low}..{high}, got {value!r}")
    return value


def _num(doc: dict, key: str, where: str, low: float, high: float, default: float = 0.0) -> float:
    value = doc.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise ScenarioError(f"{where}: {key} must be a number in {low}..{high}, got {value!r}")
    return float(value)


def _bool(doc: dict, key: str, where: str, default: bool) -> bool:
    value = doc.get(key, default)
    if not isinstance(value, bool):
        raise ScenarioError(f"{where}: {key} must be true or false")
    return value


# --- random elections ----------------------------------------------------------------------------------

SURVIVABLE = ("kill", "pause", "partition", "isolate", "delay", "garbage", "corrupt")


def random_scenario(rng: random.Random, index: int, seed: int) -> Scenario:
    """One random election within what the protocol must survive: n in 2..12, k in 2..n, up to n-k
    guardians missing at decryption, and a few faults that heal (a killed node restarts, a pause or
    a partition ends) so that the ceremony completes and at least k guardians decrypt."""
    n = rng.randint(2, 12)
    k = rng.randint(2, n)
    missing = tuple(sorted(rng.sample(range(1, n + 1), rng.randint(0, n - k))))
    faults = []
    for _ in range(rng.randint(0, 2)):
        action = rng.choice(SURVIVABLE)
        when = rng.choice(("ceremony:keys", "ceremony:shares", "ceremony:result", "decryption:shares"))
        victim = rng.choice([i for i in range(1, n + 1) if i not in missing] or [1])
        other = rng.choice([i for i in range(1, n + 1) if i != victim])
        if action == "kill":
            faults.append(Fault(when, "kill", victim, None, seconds=rng.uniform(0.5, 2.0)))
        elif action == "pause":
            faults.append(Fault(when, "pause", victim, None, seconds=rng.uniform(0.5, 2.0)))
        elif action == "isolate":
            faults.append(Fault(when, "isolate", victim, None, seconds=rng.uniform(0.5, 2.0)))
        elif action == "partition":
            faults.append(Fault(when, "partition", None, tuple(sorted((victim, other))), seconds=rng.uniform(0.5, 2.0)))
        elif action == "delay":
            faults.append(Fault(when, "delay", None, tuple(sorted((victim, other))), value=rng.uniform(0.01, 0.2)))
        else:
            faults.append(Fault(when, action, None, tuple(sorted((victim, other))),
                                value=64 if action == "garbage" else 0.05))
    return Scenario(f"random-{index + 1}", f"random election {index + 1} of seed {seed}: n={n}, k={k}",
                    n, k, ballots=2, challenged=rng.randint(0, 1), phase_timeout=20.0 + 3 * n, timeout=15.0,
                    custody=False, compensated=rng.random() < 0.3, missing_at_decryption=missing,
                    faults=tuple(faults), expect=Expect(missing=missing, exact_missing=False),
                    seed=rng.getrandbits(32))
