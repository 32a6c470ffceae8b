"""``conf/identity.yaml``: deterministic identifiers, the Splink model, cluster guards.

The model is described here in business terms (which evidence, which levels, which
blocking rules); :mod:`lakecdp.identity.comparisons` turns it into Splink settings for the
chosen backend. Every section has working defaults, so a minimal file is::

    version: 1

Sections owned by the stable-ids / survivorship code (``stable_ids``, ``survivorship``)
are added next to these by that code.

Example:
    >>> config = load_identity_config("conf")
    >>> config.backend
    'duckdb'
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from lakecdp.config import StrictModel, load_model
from lakecdp.identity.named_rules import SPECIAL_RULES, special_rule
from lakecdp.identity.stable_ids import StableIdSettings
from lakecdp.identity.survivorship import SurvivorshipRules

IdentifierType = Literal["email", "phone", "device_id", "crm_id", "customer_number"]

# columns of the prepared matching table a blocking rule may name
MATCH_COLUMNS = frozenset(
    {
        "first_name",
        "first_name_canonical",
        "first_name_soundex",
        "middle_name",
        "last_name",
        "last_name_soundex",
        "dob",
        "email",
        "phone",
        "address_line1",
        "street_number",
        "street_name",
        "address_line2",
        "postcode",
        "city",
        "region",
        "country",
        "source",
    }
)


class IdentifierRule(StrictModel):
    """One strong identifier that links records deterministically."""

    type: IdentifierType
    # exact values (after normalisation, compared case-insensitively) that are never evidence
    junk_values: list[str] = Field(default_factory=list)
    # regular expressions (searched in the normalised value) that mark a value as junk
    junk_patterns: list[str] = Field(default_factory=list)
    # a value used by more distinct people than this is reported, not linked
    max_people_per_identifier: int = Field(default=1, ge=1)

    @field_validator("junk_patterns")
    @classmethod
    def _compiles(cls, patterns: list[str]) -> list[str]:
        for pattern in patterns:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"invalid regular expression {pattern!r}: {exc}") from exc
        return patterns


class DeterministicSettings(StrictModel):
    enabled: bool = True
    identifiers: list[IdentifierRule] = Field(
        default_factory=lambda: [
            IdentifierRule(type="email"),
            IdentifierRule(type="phone"),
            IdentifierRule(type="device_id"),
            IdentifierRule(type="crm_id"),
            IdentifierRule(type="customer_number"),
        ]
    )

    @field_validator("identifiers")
    @classmethod
    def _unique(cls, rules: list[IdentifierRule]) -> list[IdentifierRule]:
        seen = [r.type for r in rules]
        duplicates = sorted({t for t in seen if seen.count(t) > 1})
        if duplicates:
            raise ValueError(f"identifier types listed twice: {duplicates}")
        return rules

    def rule(self, identifier_type: str) -> IdentifierRule | None:
        return next((r for r in self.identifiers if r.type == identifier_type), None)


ComparisonKind = Literal["name", "date_of_birth", "address", "contact", "address_contact"]


class ComparisonSpec(StrictModel):
    """One piece of evidence in the Splink model.

    Kinds (each is ONE comparison, so correlated evidence is counted once):

    - ``name``: first + last name: exact, swapped (also with one typo, or with the given name
      as a nickname of the other's), nickname, one typo or
      similar first / last / both, sound alike, initial, one name missing with the other
      agreeing, same last other first, same first other last, similar first other last, else.
    - ``date_of_birth``: ``yyyyMMdd`` text: exact, one typo, day/month swapped, same year and
      month, two typos, else.
    - ``address``: street + postcode combined: both exact, same postcode and similar
      street, same street other postcode, same postcode only, else.
    - ``contact``: email and phone combined: both exact, either exact, else.
    - ``address_contact`` (default): address and contact points as one comparison, since a
      household shares all of it: same address and contact, same contact, same address,
      address with one typo, street + number with postcode or city close, street + number,
      same street other number, similar street with postcode or city close, postcode one typo
      in the same town, same postcode, same city, else.
    """

    kind: ComparisonKind
    # Jaro-Winkler similarity at or above which two strings are "similar"
    fuzzy_threshold: float = Field(default=0.88, gt=0, le=1)
    # weight exact matches by how rare the value is: for ``name`` the exact full name, by the
    # share of records with its first name times the share with its last name
    # (frequencies.name_frequencies, measured at training); for ``address`` the postcode (Splink's own frequencies)
    term_frequency: bool = False
    dob_close_days: int = Field(default=31, ge=1)


def _default_comparisons() -> list[ComparisonSpec]:
    return [
        ComparisonSpec(kind="name", term_frequency=True),
        ComparisonSpec(kind="date_of_birth"),
        ComparisonSpec(kind="address_contact"),
    ]


BlockingRule = list[str]


class TrainingSettings(StrictModel):
    # deterministic rules (column lists) for the prior probability two records match
    prior_rules: list[BlockingRule] = Field(default_factory=lambda: [["first_name", "last_name", "dob"]])
    # share of true matches the prior rules find: a first guess, used for u and EM
    prior_recall: float = Field(default=0.6, gt=0, le=1)
    # after EM, estimate the prior again with the recall the trained model implies (the m of
    # "first and last name exact" times the m of "same date of birth"): a set where one
    # duplicate in two has a typo in the name or birth date must not keep the guessed recall
    prior_recall_from_model: bool = True
    # ... times the share of same-name pairs whose prior-rule columns are filled on both
    # sides: a source without birth dates must not leave the prior at a fraction of the
    # true one (generated world with such a shop: 0.00014 against a true 0.00058)
    prior_recall_populated_share: bool = True
    # record pairs sampled for u (chance agreement): u_pairs_per_record per record, at
    # least min_pairs_for_u, at most max_pairs_for_u (and never more than the data holds).
    # Sampling 2,000,000 pairs took 30-40 s of training on 5,000 records; 200,000 gave the
    # same F1 on FEBRL1/FEBRL2 and the generated worlds (bench/RESULTS.md)
    u_pairs_per_record: int = Field(default=40, ge=1)
    min_pairs_for_u: int = Field(default=200_000, ge=1000)
    max_pairs_for_u: int = Field(default=2_000_000, ge=1000)
    seed: int = 42
    # one EM session per rule; every comparison must vary in at least one of them
    em_blocking_rules: list[BlockingRule] = Field(
        default_factory=lambda: [["dob"], ["first_name_canonical", "last_name"]]
    )
    em_max_iterations: int = Field(default=25, ge=1)
    # no level's m may fall below this: a level EM never saw among matches must not veto
    min_m_probability: float = Field(default=0.005, gt=0, lt=0.5)


class ModelSettings(StrictModel):
    comparisons: list[ComparisonSpec] = Field(default_factory=_default_comparisons)
    # candidate pairs for prediction: the union of these rules (columns equal on both sides);
    # or one named rule alone (lakecdp.identity.named_rules.SPECIAL_RULES): ["swapped_names"]
    # pairs first/last names swapped across records
    blocking_rules: list[BlockingRule] = Field(
        default_factory=lambda: [
            ["email"],
            ["phone"],
            ["first_name_canonical", "last_name"],
            ["dob", "last_name"],
            ["dob", "postcode"],
            ["dob", "first_name_canonical"],
            ["swapped_names"],
            ["first_name_as_last_name"],
            ["last_name_as_first_name"],
            ["last_name_first_initial"],
            ["first_name_soundex", "last_name_soundex"],
            ["dob", "first_name_soundex"],
            ["dob", "last_name_soundex"],
            ["postcode", "first_name_soundex"],
            ["postcode", "last_name_soundex"],
            ["postcode", "street_number"],
            ["street_name", "street_number", "first_name_soundex"],
            ["street_name", "street_number", "last_name_soundex"],
            ["dob", "street_number"],
            ["dob", "street_name"],
            ["street_number", "first_name_soundex"],
            ["street_number", "last_name_soundex"],
        ]
    )
    # pairs at or above this probability are edges; below are discarded
    match_threshold: float = Field(default=0.95, gt=0, lt=1)
    training: TrainingSettings = Field(default_factory=TrainingSettings)
    # nickname -> canonical first name, applied before comparing first names
    nicknames: dict[str, list[str]] = Field(default_factory=dict)

    @field_validator("comparisons")
    @classmethod
    def _unique_kinds(cls, comparisons: list[ComparisonSpec]) -> list[ComparisonSpec]:
        kinds = [c.kind for c in comparisons]
        duplicates = sorted({k for k in kinds if kinds.count(k) > 1})
        if duplicates:
            raise ValueError(f"comparison kinds listed twice: {duplicates}")
        if not comparisons:
            raise ValueError("at least one comparison is needed")
        return comparisons

    @model_validator(mode="after")
    def _rules_name_known_columns(self) -> ModelSettings:
        rules = [*self.blocking_rules, *self.training.prior_rules, *self.training.em_blocking_rules]
        for rule in rules:
            if not rule:
                raise ValueError("a blocking rule needs at least one column")
            if special_rule(rule):
                continue
            unknown = sorted(set(rule) - MATCH_COLUMNS)
            if unknown:
                raise ValueError(
                    f"blocking rule {rule} names unknown columns {unknown}; "
                    f"known: {sorted(MATCH_COLUMNS)}, or one named rule alone: "
                    f"{[[name] for name in SPECIAL_RULES]}"
                )
        return self


WeakLinkPolicy = Literal["flag", "split"]


class ClusterGuards(StrictModel):
    # clusters larger than this are flagged 'oversized' (and split at weak links with 'split')
    max_cluster_size: int = Field(default=50, ge=2)
    # a probabilistic edge below this probability is weak; a cluster held together only
    # through a weak edge (a bridge between strongly linked parts) is flagged or split. Strong
    # edges between records with birth dates also vouch for dates that disagree
    # (lakecdp.identity.conflicts: without that, such records are never chained into one cluster)
    weak_link_probability: float = Field(default=0.99, gt=0, le=1)
    weak_link_policy: WeakLinkPolicy = "split"
    # a probable link (probability at least this, below the match threshold) joins two
    # clusters when each is the other's only candidate and they hold no record of a common
    # source: a shop record without birth date and a partner record without address that
    # share only a name, with no one else of that name around. None: off
    exclusive_link_probability: float | None = Field(default=0.8, gt=0, le=1)


class DuckDBSettings(StrictModel):
    """The DuckDB databases of the duckdb backend (Splink's and the record preparation's)."""

    # the memory one DuckDB database may use before it spills to temp_directory: a size
    # ("4GB", "512MiB") or a share of this machine's RAM ("40%"). DuckDB's own default, 80 %,
    # let Splink's predict over ~1M records grow past 20 GB beside other jobs on one box
    memory_limit: str = "40%"
    # where DuckDB spills, relative to the project root; None: a folder of its own in the
    # system temp dir (DuckDB removes its spill files, and the folder it made, on close)
    temp_directory: str | None = None

    @field_validator("memory_limit")
    @classmethod
    def _memory_limit_is_a_size(cls, value: str) -> str:
        if not _MEMORY_LIMIT.fullmatch(value.strip()):
            raise ValueError(f"memory_limit must be a size like '4GB' or a share of RAM like '40%', got {value!r}")
        return value.strip()


_MEMORY_LIMIT = re.compile(r"\d+(\.\d+)?\s*(%|[KMGT]i?B|bytes)", re.IGNORECASE)


class IdentityConfig(StrictModel):
    """``conf/identity.yaml``."""

    version: Literal[1]
    # duckdb: fast on one machine; spark: scales out on a cluster
    backend: Literal["duckdb", "spark"] = "duckdb"
    # Spark backend: how Splink cuts long lineages (None: Splink's default, parquet files
    # under the checkpoint dir; "persist" keeps whole lineages in the plan: planning
    # clustering's iterations with it ran the driver out of memory in tests)
    spark_break_lineage: Literal["persist", "checkpoint", "parquet"] | None = None
    # where trained models are kept, relative to the project root
    models_dir: str = "models/identity"
    # memory limit and spill folder of the duckdb backend's DuckDB databases
    duckdb: DuckDBSettings = Field(default_factory=DuckDBSettings)
    deterministic: DeterministicSettings = Field(default_factory=DeterministicSettings)
    model: ModelSettings = Field(default_factory=ModelSettings)
    clustering: ClusterGuards = Field(default_factory=ClusterGuards)
    # stable customer ids and golden records (lakecdp.identity.stable_ids / .survivorship)
    stable_ids: StableIdSettings = Field(default_factory=StableIdSettings)
    survivorship: SurvivorshipRules = Field(default_factory=SurvivorshipRules)

    @property
    def edge_floor(self) -> float:
        """The lowest probability a probabilistic edge is kept (and followed) at: the match
        threshold, or the exclusive-link probability when that is lower."""
        exclusive = self.clustering.exclusive_link_probability
        threshold = self.model.match_threshold
        return threshold if exclusive is None else min(threshold, exclusive)

    def with_backend(self, backend: Literal["duckdb", "spark"]) -> IdentityConfig:
        return self.model_copy(update={"backend": backend})

    def with_project_root(self, root: Path) -> IdentityConfig:
        """This config with ``duckdb.temp_directory`` resolved against the project root."""
        spill = self.duckdb.temp_directory
        if spill is None or Path(spill).is_absolute():
            return self
        resolved = self.duckdb.model_copy(update={"temp_directory": str((root / spill).resolve())})
        return self.model_copy(update={"duckdb": resolved})


def load_identity_config(conf_dir: str | os.PathLike[str]) -> IdentityConfig:
    """Load and validate ``<conf_dir>/identity.yaml``.

    Args:
        conf_dir: the project's config folder.

    Returns:
        The validated :class:`IdentityConfig`; errors name the file and the field.
    """
    return load_model(Path(conf_dir) / "identity.yaml", IdentityConfig)
