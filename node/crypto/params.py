"""Group parameters: the ElectionGuard 2.1 standard set (spec 3.1.1) and the toy sets.

Every end-to-end path uses STANDARD. The toy sets of the spec's appendix exist only
so that unit tests of the algebra can run thousands of cases per second; they give
no security at all.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import gmpy2
from gmpy2 import mpz

from node.crypto.errors import ParameterError

_P_HEX = (
    "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF"
    "B17217F7D1CF79ABC9E3B39803F2F6AF40F343267298B62D8A0D175B8BAAFA2B"
    "E7B876206DEBAC98559552FB4AFA1B10ED2EAE35C138214427573B291169B825"
    "3E96CA16224AE8C51ACBDA11317C387EB9EA9BC3B136603B256FA0EC7657F74B"
    "72CE87B19D6548CAF5DFA6BD38303248655FA1872F20E3A2DA2D97C50F3FD5C6"
    "07F4CA11FB5BFB90610D30F88FE551A2EE569D6DFC1EFA157D2E23DE1400B396"
    "17460775DB8990E5C943E732B479CD33CCCC4E659393514C4C1A1E0BD1D6095D"
    "25669B333564A3376A9C7F8A5E148E82074DB6015CFE7AA30C480A5417350D2C"
    "955D5179B1E17B9DAE313CDB6C606CB1078F735D1B2DB31B5F50B5185064C18B"
    "4D162DB3B365853D7598A1951AE273EE5570B6C68F96983496D4E6D330AF889B"
    "44A02554731CDC8EA17293D1228A4EF98D6F5177FBCF0755268A5C1F9538B982"
    "61AFFD446B1CA3CF5E9222B88C66D3C5422183EDC99421090BBB16FAF3D949F2"
    "36E02B20CEE886B905C128D53D0BD2F9621363196AF503020060E49908391A0C"
    "57339BA2BEBA7D052AC5B61CC4E9207CEF2F0CE2D7373958D762265890445744"
    "FB5F2DA4B751005892D356890DEFE9CAD9B9D4B713E06162A2D8FDD0DF2FD608"
    "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF"
)
_G_HEX = (
    "36036FED214F3B50DC566D3A312FE4131FEE1C2BCE6D02EA39B477AC05F7F885"
    "F38CFE77A7E45ACF4029114C4D7A9BFE058BF2F995D2479D3DDA618FFD910D3C"
    "4236AB2CFDD783A5016F7465CF59BBF45D24A22F130F2D04FE93B2D58BB9C1D1"
    "D27FC9A17D2AF49A779F3FFBDCA22900C14202EE6C99616034BE35CBCDD3E7BB"
    "7996ADFE534B63CCA41E21FF5DC778EBB1B86C53BFBE99987D7AEA0756237FB4"
    "0922139F90A62F2AA8D9AD34DFF799E33C857A6468D001ACF3B681DB87DC4242"
    "755E2AC5A5027DB81984F033C4D178371F273DBB4FCEA1E628C23E52759BC776"
    "5728035CEA26B44C49A65666889820A45C33DD37EA4A1D00CB62305CD541BE1E"
    "8A92685A07012B1A20A746C3591A2DB3815000D2AACCFE43DC49E828C1ED7387"
    "466AFD8E4BF1935593B2A442EEC271C50AD39F733797A1EA11802A2557916534"
    "662A6B7E9A9E449A24C8CFF809E79A4D806EB681119330E6C57985E39B200B48"
    "93639FDFDEA49F76AD1ACD997EBA13657541E79EC57437E504EDA9DD01106151"
    "6C643FB30D6D58AFCCD28B73FEDA29EC12B01A5EB86399A593A9D5F450DE39CB"
    "92962C5EC6925348DB54D128FD99C14B457F883EC20112A75A6A0581D3D80A3B"
    "4EF09EC86F9552FFDA1653F133AA2534983A6F31B0EE4697935A6B1EA2F75B85"
    "E7EBA151BA486094D68722B054633FEC51CA3F29B31E77E317B178B6B9D8AE0F"
)
# delta of spec 3.1.1: p = 2^4096 - 2^3840 + 2^256 (floor(2^3584 ln 2) + delta) + (2^256 - 1)
STANDARD_DELTA = 287975203778583638958138611533602521491887169409704874643524560756486080635197037903


@dataclass(frozen=True)
class Group:
    """The prime-order subgroup Z_p^r of order q with generator g (spec 3.1)."""

    name: str
    p: mpz
    q: mpz
    g: mpz
    r: mpz = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "r", (self.p - 1) // self.q)

    @cached_property
    def p_bytes(self) -> int:
        """l_p: the fixed byte length of an element of Z_p (spec 5.1.1); 512 for STANDARD."""
        return (int(self.p).bit_length() + 7) // 8

    @cached_property
    def q_bytes(self) -> int:
        """l_q: the fixed byte length of an element of Z_q (spec 5.1.2); 32 for STANDARD."""
        return (int(self.q).bit_length() + 7) // 8

    @property
    def is_standard(self) -> bool:
        return self.p == STANDARD.p and self.q == STANDARD.q and self.g == STANDARD.g

    def __hash__(self) -> int:
        return hash((int(self.p), int(self.q), int(self.g)))

    def __reduce__(self):
        return (Group, (self.name, self.p, self.q, self.g))


def _ln2_middle_bits() -> mpz:
    """floor(2^3584 * ln 2), computed with enough precision to be exact."""
    with gmpy2.context(gmpy2.get_context(), precision=3700):
        return mpz(gmpy2.floor(gmpy2.log(2) * gmpy2.exp2(3584)))


def validate_group(group: Group, *, check_generation: bool = True) -> None:
    """Check the properties of spec 3.1.1 (and footnote 25); raise ParameterError naming the first that fails.

    With check_generation, also rebuild p from ln 2 and delta as 3.1.1 describes,
    so the standard p is confirmed from its definition rather than from a copy.
    """
    p, q, g = group.p, group.q, group.g
    if not gmpy2.is_prime(q, 50):
        raise ParameterError(f"{group.name}: q is not prime")
    if not gmpy2.is_prime(p, 25):
        raise ParameterError(f"{group.name}: p is not prime")
    if (p - 1) % q != 0:
        raise ParameterError(f"{group.name}: p - 1 is not a multiple of q")
    if not (1 < g < p) or gmpy2.powmod(g, q, p) != 1:
        raise ParameterError(f"{group.name}: g is not an element of order q in Z_p^*")
    if not gmpy2.is_prime(group.r // 2, 25):
        raise ParameterError(f"{group.name}: (p - 1)/2q is not prime")
    if group.is_standard and check_generation:
        if q != mpz(2) ** 256 - 189:  # eq 3
            raise ParameterError("standard q is not 2^256 - 189")
        expected_p = (mpz(2) ** 4096 - mpz(2) ** 3840
                      + mpz(2) ** 256 * (_ln2_middle_bits() + STANDARD_DELTA)
                      + (mpz(2) ** 256 - 1))
        if p != expected_p:
            raise ParameterError("standard p does not follow from ln 2 and delta (spec 3.1.1)")
        if g != gmpy2.powmod(2, group.r, p):  # g = 2^r mod p (spec 3.1.1)
            raise ParameterError("standard g is not 2^r mod p")


STANDARD = Group("standard", mpz(_P_HEX, 16), mpz(2) ** 256 - 189, mpz(_G_HEX, 16))

# Toy parameters of the spec's appendix: for fast tests of the algebra only.
TOY_16 = Group("toy-16", mpz(59183), mpz(127), mpz(32616))
TOY_32 = Group("toy-32", mpz(4214179679), mpz(65521), mpz(496451214))
TOY_64 = Group("toy-64", mpz(18444843247520538623), mpz(16777213), mpz(14757355607624201864))
TOY_128 = Group(
    "toy-128",
    mpz(340282366887442052436576802921059975167),
    mpz(4294967291),
    mpz(55628101181055236817878380639043675517),
)

GROUPS = {grp.name: grp for grp in (STANDARD, TOY_16, TOY_32, TOY_64, TOY_128)}


def encode_p(group: Group, x: int) -> bytes:
    """b(x, l_p): an element of Z_p as a hash input (spec 5.1.1)."""
    from node.crypto.encoding import b

    return b(x, group.p_bytes)


def encode_q(group: Group, x: int) -> bytes:
    """b(x, l_q): an element of Z_q as a hash input (spec 5.1.2)."""
    from node.crypto.encoding import b

    return b(x, group.q_bytes)
