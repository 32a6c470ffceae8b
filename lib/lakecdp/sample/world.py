"""The true world: people in households with their real attributes and source coverage.

Pure Python functions of (seed, person index); :mod:`lakecdp.sample.generator` runs them inside
Spark partitions. Person ``i`` is the same person for every population size, run and increment.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from datetime import date, timedelta

from lakecdp.sample import names
from lakecdp.sample.config import SampleConfig
from lakecdp.sample.draws import Draw

# people are grouped into households inside blocks of this many consecutive ids
HOUSEHOLD_BLOCK = 4
_DOB_FIRST = date(1938, 1, 1)
_DOB_SPAN_DAYS = 25_000
CALLING_CODES = {"GB": "44", "IE": "353", "DE": "49"}
BEHAVIOURS = (
    "high_spender_recent",
    "cart_abandoner",
    "repeat_browser",
    "churn_risk",
    "unsubscribed",
    "hard_bounced",
)


@dataclass(frozen=True)
class Address:
    street: str
    postcode: str
    town: str


@dataclass(frozen=True)
class Person:
    index: int
    household: int
    country: str
    first_name: str
    nicknames: tuple[str, ...]
    last_name: str
    dob: date
    home: Address
    moved: Address
    landline: str  # national significant number (no trunk 0, no country code)
    mobile: str | None
    email: str
    other_email: str
    in_crm: bool
    in_shop: bool
    in_third_party: bool
    web_login: bool
    web_anonymous: bool
    crm_copies: int
    shop_copies: int
    devices: int
    behaviour: str | None

    @property
    def person_id(self) -> str:
        return f"person_{self.index:07d}"

    @property
    def household_id(self) -> str:
        return f"hh_{self.household:07d}"

    @property
    def zone(self) -> str:
        return names.COUNTRIES[self.country][1]

    @property
    def web_active(self) -> bool:
        return self.web_login or self.web_anonymous

    @property
    def mailable(self) -> bool:
        return self.in_crm or self.in_shop


def _starts_household(seed: int, index: int) -> bool:
    # the first id of a block always starts one; the others do with probability 0.45
    return index % HOUSEHOLD_BLOCK == 0 or Draw(seed, "household", index).chance("start", 0.45)


def household_of(seed: int, index: int) -> int:
    """The household of person ``index``: the nearest household start at or before it in its block."""
    candidate = index
    while not _starts_household(seed, candidate):
        candidate -= 1
    return candidate


def address(draw: Draw, country: str) -> Address:
    town, prefix = draw.pick("town", names.TOWNS[country])
    street = draw.pick("street", names.STREETS[country])
    number = draw.integer("number", 1, 240)
    letters = "ABDEFGHJLNPQRSTUWXYZ"
    if country == "GB":
        postcode = f"{prefix} {draw.digits('d0', 1)}{draw.pick('l0', letters)}{draw.pick('l1', letters)}"
    elif country == "IE":
        postcode = (
            f"{prefix} {draw.pick('l0', letters)}{draw.digits('d0', 1)}{draw.pick('l1', letters)}{draw.digits('d1', 1)}"
        )
    else:
        postcode = f"{prefix}{draw.digits('d0', 3)}"
    line1 = f"{street} {number}" if country == "DE" else f"{number} {street}"
    return Address(line1, postcode, town)


def phone_number(draw: Draw, country: str, *, mobile: bool) -> str:
    """A national significant number: what follows ``+<country code>``."""
    if mobile:
        if country == "GB":
            return draw.pick("p", ("7700", "7911", "7824", "7400", "7520", "7984")) + draw.digits("d", 6)
        if country == "IE":
            return "8" + draw.pick("p", "35679") + draw.digits("d", 7)
        return draw.pick("p", ("151", "152", "160", "170", "176")) + draw.digits("d", 8)
    if country == "GB":
        return "20" + draw.digits("d", 8)
    if country == "IE":
        return "1" + draw.digits("d", 7)
    return draw.pick("p", ("30", "40", "89", "69")) + draw.digits("d", 8)


def phone_formats(nsn: str, country: str) -> dict[str, str]:
    """The ways people write one number: national, international and E.164."""
    code = CALLING_CODES[country]
    if country == "GB" and nsn.startswith("20"):
        return {
            "national": f"(020) {nsn[2:6]} {nsn[6:]}",
            "international": f"+44 20 {nsn[2:6]} {nsn[6:]}",
            "e164": f"+44{nsn}",
            "compact": f"0{nsn}",
        }
    head = 2 if country == "IE" else (4 if country == "GB" else 3)
    return {
        "national": f"0{nsn[:head]} {nsn[head:]}",
        "international": f"+{code} {nsn[:head]} {nsn[head:]}",
        "e164": f"+{code}{nsn}",
        "compact": f"0{nsn}",
    }


_FOLD = str.maketrans(
    {
        "ß": "ss",
        "ä": "ae",
        "ö": "oe",
        "ü": "ue",
        "á": "a",
        "é": "e",
        "í": "i",
        "ó": "o",
        "ú": "u",
        "à": "a",
        "è": "e",
        "ç": "c",
        "ñ": "n",
    }
)


def ascii_fold(text: str) -> str:
    """``Ó Súilleabháin`` -> ``osuilleabhain``: what a name becomes in an email address."""
    return "".join(ch for ch in text.lower().translate(_FOLD) if ch.isascii() and ch.isalnum())


def name_crowding(population: int) -> float:
    """Expected number of other people in the world with one's first name and surname."""
    return population / (len(names.FIRST_NAMES) * len(names.SURNAMES))


def email_address(draw: Draw, first: str, last: str, country: str, crowding: float = 0.0) -> str:
    """An address built from the name, as people pick them.

    A mailbox belongs to one person: in a big world many people share a name, and the plain
    forms are taken, so (with probability ``1 - exp(-crowding)``) the address gets a long
    number, as providers make people do. Without this, two strangers named Ann Lee would
    share ``ann.lee@...`` in a million-person world — a link no real data has.
    """
    f, l = ascii_fold(first), ascii_fold(last)
    number = draw.digits("n", 2)
    local = draw.pick(
        "style",
        (
            f"{f}.{l}",
            f"{f}{l}",
            f"{f[:1]}.{l}",
            f"{f}_{l}",
            f"{f}.{l}{number}",
            f"{f[:1]}{l}{number}",
        ),
    )
    if crowding > 0 and draw.u("taken") < 1 - math.exp(-crowding):
        local += draw.digits("tail", 6)
    return f"{local}@{draw.pick('domain', names.EMAIL_DOMAINS[country])}"


def _behaviour(draw: Draw, config: SampleConfig, eligible: dict[str, bool]) -> str | None:
    u = draw.u("behaviour")
    low = 0.0
    for name, rate in config.behaviours.model_dump().items():
        if low <= u < low + rate:
            return name if eligible[name] else None
        low += rate
    return None


def make_person(seed: int, index: int, config: SampleConfig, *, initial: int) -> Person:
    """Person ``index`` of the world with ``seed``.

    ``initial`` is the population of increment 0; people at or above it arrive in later
    increments and carry no planted behaviour (a newcomer is neither a churn risk nor a recent
    high spender yet).
    """
    household = household_of(seed, index)
    hh = Draw(seed, "household", household)
    me = Draw(seed, "person", index)
    country_u = hh.u("country")
    country = "GB" if country_u < 0.6 else ("IE" if country_u < 0.8 else "DE")
    first_name, nicknames = me.pick("first_name", names.FIRST_NAMES)
    last_name = hh.pick("surname", names.SURNAMES)
    head_first, _ = Draw(seed, "person", household).pick("first_name", names.FIRST_NAMES)
    crowding = name_crowding(initial)
    own_email = email_address(me.child("email"), first_name, last_name, country, crowding)
    shares_email = index != household and me.chance("shared_email", config.dirt.shared_household_email)
    email = (
        email_address(Draw(seed, "person", household).child("email"), head_first, last_name, country, crowding)
        if shares_email
        else own_email
    )
    cov = config.coverage
    in_crm = me.chance("in_crm", cov.crm)
    in_shop = me.chance("in_shop", cov.shop)
    web_login = me.chance("web_login", cov.web_login)
    eligible = {
        "high_spender_recent": in_shop,
        "cart_abandoner": web_login,
        "repeat_browser": web_login,
        "churn_risk": True,
        "unsubscribed": in_crm or in_shop,
        "hard_bounced": in_crm or in_shop,
    }
    return Person(
        index=index,
        household=household,
        country=country,
        first_name=first_name,
        nicknames=tuple(n for n in nicknames.split("|") if n),
        last_name=last_name,
        dob=_DOB_FIRST + timedelta(days=me.integer("dob", 0, _DOB_SPAN_DAYS)),
        home=address(hh.child("home"), country),
        moved=address(me.child("moved"), country),
        landline=phone_number(hh.child("landline"), country, mobile=False),
        mobile=phone_number(me.child("mobile"), country, mobile=True) if me.chance("has_mobile", 0.85) else None,
        email=email,
        other_email=email_address(me.child("other_email"), first_name, last_name, country, crowding),
        in_crm=in_crm,
        in_shop=in_shop,
        in_third_party=me.chance("in_third_party", cov.third_party),
        web_login=web_login,
        web_anonymous=not web_login and me.chance("web_anonymous", cov.web_anonymous),
        crm_copies=2 if me.chance("crm_duplicate", cov.duplicate_account) else 1,
        shop_copies=2 if me.chance("shop_duplicate", cov.duplicate_account) else 1,
        devices=2 if me.chance("two_devices", 0.3) else 1,
        behaviour=_behaviour(me, config, eligible) if index < initial else None,
    )


@dataclass(frozen=True)
class Product:
    product_id: str
    name: str
    category: str
    price: float


@lru_cache(maxsize=4096)
def make_product(seed: int, index: int) -> Product:
    """Catalog entry ``index`` (``P00001`` is index 0)."""
    draw = Draw(seed, "product", index)
    category = names.PRODUCT_CATEGORIES[index % len(names.PRODUCT_CATEGORIES)]
    low, high = names.PRODUCT_PRICES[category]
    price = round(low + draw.u("price") * (high - low), 0) - 0.01
    name = f"{draw.pick('adjective', names.PRODUCT_ADJECTIVES)} {draw.pick('noun', names.PRODUCT_NOUNS[category])}"
    return Product(f"P{index + 1:05d}", name, category, round(price, 2))
