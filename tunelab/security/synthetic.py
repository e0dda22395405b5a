"""A seeded, labelled set of synthetic texts with and without PII, to measure the detectors.

Why synthetic: real PII cannot be shipped, and a generator can cover every format the
detectors claim (international phone layouts, card networks, IBAN countries) while the hard
negatives hold what a careless detector confuses with PII: order numbers, dates, versions,
IP addresses, ISBNs, 16-digit numbers failing Luhn, IBANs with a wrong checksum, retina file
names and ``git@`` remotes. Each text carries the gold spans, so precision and recall are
counted per entity, not per text.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from tunelab.security.patterns import luhn_valid

FIRST = ["alice", "bob", "carmen", "deepak", "elena", "farah", "gustav", "hiro", "ines", "jamal", "kofi", "lena"]
LAST = ["smith", "okafor", "garcia", "nguyen", "muller", "rossi", "kowalski", "haddad", "tanaka", "silva"]
DOMAINS = ["example.com", "mail.example.org", "acme.co.uk", "uni-bonn.de", "startup.io", "corp.example.net"]


@dataclass(frozen=True)
class Labelled:
    """A text and its gold PII spans ``(kind, start, end)``."""

    text: str
    spans: tuple[tuple[str, int, int], ...]


def _digits(rng: random.Random, n: int) -> str:
    return "".join(rng.choice("0123456789") for _ in range(n))


def _email(rng: random.Random) -> str:
    first, last = rng.choice(FIRST), rng.choice(LAST)
    local = rng.choice([f"{first}.{last}", f"{first[0]}{last}", f"{first}_{last}{rng.randint(1, 99)}",
                        f"{first}+news", f"{last}.{first}"])
    return f"{local}@{rng.choice(DOMAINS)}"


def _phone(rng: random.Random) -> str:
    n = lambda k: _digits(rng, k)  # noqa: E731
    area = str(rng.randint(201, 989))
    return rng.choice([
        f"+1 ({area}) {rng.randint(200, 999)}-{n(4)}", f"({area}) {rng.randint(200, 999)}-{n(4)}",
        f"{area}-{rng.randint(200, 999)}-{n(4)}", f"{area}.{rng.randint(200, 999)}.{n(4)}",
        f"+44 20 {n(4)} {n(4)}", f"+44 7{n(3)} {n(6)}", f"020 {n(4)} {n(4)}", f"07{n(3)} {n(6)}",
        f"+49 30 {n(8)}", f"+49 151 {n(8)}", f"+33 1 {n(2)} {n(2)} {n(2)} {n(2)}", f"01 {n(2)} {n(2)} {n(2)} {n(2)}",
        f"+91 98{n(3)} {n(5)}", f"+81 3-{n(4)}-{n(4)}", f"+61 2 {n(4)} {n(4)}",
    ])  # fmt: skip


def _luhn_complete(rng: random.Random, prefix: str, length: int) -> str:
    body = prefix + _digits(rng, length - len(prefix) - 1)
    return next(body + d for d in "0123456789" if luhn_valid(body + d))


def _card(rng: random.Random) -> str:
    prefix, length = rng.choice([("4", 16), ("51", 16), ("55", 16), ("2221", 16), ("34", 15), ("37", 15),
                                 ("6011", 16), ("65", 16), ("35", 16)])
    number = _luhn_complete(rng, prefix, length)
    sep = rng.choice(["", " ", "-"])
    if not sep:
        return number
    groups = [number[:4], number[4:10], number[10:]] if length == 15 else [number[i : i + 4] for i in range(0, 16, 4)]
    return sep.join(groups)


def _iban_check(country: str, bban: str) -> str:
    moved = bban + country + "00"
    return f"{98 - int(''.join(str(int(c, 36)) for c in moved)) % 97:02d}"


def _iban(rng: random.Random, valid: bool = True) -> str:
    country, bban = rng.choice([("DE", _digits(rng, 18)), ("GB", "WEST" + _digits(rng, 14)),
                                ("FR", _digits(rng, 23)), ("NL", "ABNA" + _digits(rng, 10)),
                                ("ES", _digits(rng, 20))])
    check = _iban_check(country, bban)
    if not valid:
        check = f"{(int(check) + rng.randint(1, 50)) % 100:02d}"
    iban = country + check + bban
    return " ".join(iban[i : i + 4] for i in range(0, len(iban), 4)) if rng.random() < 0.5 else iban


def _ssn(rng: random.Random) -> str:
    area = rng.choice([rng.randint(1, 665), rng.randint(667, 899)])  # 000, 666 and 9xx are never issued
    return f"{area:03d}-{rng.randint(1, 99):02d}-{rng.randint(1, 9999):04d}"


GENERATORS = {"email": _email, "phone": _phone, "card": _card, "iban": _iban, "ssn": _ssn}
TEMPLATES = {
    "email": ["Please send the signed contract to {} before Friday.", "You can reach our billing team at {}.",
              "Contact: {} (replies within a day)", "cc {} on the thread, she owns the budget."],
    "phone": ["Call me at {} after 5pm.", "Our front desk number is {}.", "If the courier is late, ring {}.",
              "Mobile: {} | Office hours 9-17"],
    "card": ["Charge the deposit to card {}, expiry 09/27.", "The customer paid with {} yesterday.",
             "Card number: {} (do not store)", "Refund the amount to {} please."],
    "iban": ["Wire the rent to {} by the first of the month.", "IBAN: {}, account holder J. Doe.",
             "Our bank details are {} at Example Bank.", "Please transfer the fee to {}."],
    "ssn": ["My social security number is {}.", "SSN {} was entered on the W-4 form.", "Applicant SSN: {}",
            "Verify {} against the payroll record."],
}


def _negative(rng: random.Random) -> str:
    n = lambda k: _digits(rng, k)  # noqa: E731
    bad_card = _luhn_complete(rng, "4", 16)
    bad_card = bad_card[:-1] + str((int(bad_card[-1]) + rng.randint(1, 9)) % 10)
    return rng.choice([
        f"Your order {n(10)} has shipped and should arrive soon.",
        f"The release on 20{rng.randint(10, 29)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d} fixed the bug.",
        f"Upgrade to version {rng.randint(1, 9)}.{rng.randint(0, 30)}.{rng.randint(0, 99)} before deploying.",
        f"The server at 10.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)} is down.",
        f"ISBN 978-{rng.randint(0, 9)}-{n(2)}-{n(6)}-{rng.randint(0, 9)} is the second edition.",
        f"The test number {bad_card} fails the checksum.",
        f"Reference code {bad_card[:4]} {bad_card[4:8]} {bad_card[8:12]} {bad_card[12:]} is not a card.",
        f"IBAN-like {_iban(rng, valid=False)} has a wrong checksum.",
        f"Use icon@{rng.randint(2, 3)}x.png for retina displays.",
        "Clone it with git@github.com:example/tools.git and run make.",
        f"The meeting moved to {rng.randint(1, 12)}:{rng.choice(['00', '30'])} in room {rng.randint(1, 9)}.{n(2)}.",
        f"Between {rng.randint(1950, 1990)}-{rng.randint(1991, 2020)} the population grew by {rng.randint(2, 40)}%.",
        f"Tracking: 1Z{n(3)}AA{n(10)}",
        f"Invoice total: ${rng.randint(100, 99999):,}.{n(2)} due in {rng.randint(10, 60)} days.",
        f"The sha256 is {''.join(rng.choice('0123456789abcdef') for _ in range(64))}.",
        f"Coordinates {rng.uniform(-90, 90):.4f}, {rng.uniform(-180, 180):.4f} mark the trailhead.",
        f"Write to jane at example dot com if the form is broken, or ping @{rng.choice(FIRST)} on Slack.",
        f"Postcode {n(5)} covers the old town; {n(3)} households replied.",
        f"The batch id is {n(12)} and the run took {rng.randint(2, 90)} minutes.",
        f"Serial {n(3)}-{n(3)}-{n(3)} belongs to the spare router.",
    ])  # fmt: skip


def labelled_pii_set(n: int = 400, seed: int = 0) -> list[Labelled]:
    """``n`` texts: half with PII (the five kinds in turn, some texts with two), half hard negatives."""
    rng = random.Random(seed)
    kinds = list(GENERATORS)
    out: list[Labelled] = []
    for i in range(n // 2):
        picked = [kinds[i % len(kinds)]] + ([rng.choice(kinds)] if rng.random() < 0.25 else [])
        text, spans = "", []
        for kind in picked:
            value = GENERATORS[kind](rng)
            before, after = rng.choice(TEMPLATES[kind]).split("{}")
            start = len(text) + len(before)
            spans.append((kind, start, start + len(value)))
            text += before + value + after + " "
        out.append(Labelled(text.strip(), tuple(spans)))
    out += [Labelled(_negative(rng), ()) for _ in range(n - n // 2)]
    rng.shuffle(out)
    return out
