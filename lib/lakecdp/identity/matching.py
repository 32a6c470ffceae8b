"""Probabilistic matching with Splink 5 on DuckDB (one machine) or Spark (a cluster).

The model is described in ``conf/identity.yaml`` (``model`` section) and turned into
Splink settings per backend (:mod:`lakecdp.identity.comparisons`,
:mod:`lakecdp.identity.blocking`); the trained parameters (prior, m and u of every level)
come from one versioned JSON file that either backend can apply
(:mod:`lakecdp.identity.model_store`). The records are prepared by
:mod:`lakecdp.identity.prepare` and handed to Splink by :mod:`lakecdp.identity.backends`.

Example:
    >>> matcher = ProbabilisticMatcher(config, spark=spark, model_dir=Path("models/identity"))
    >>> matcher.train(records)            # model_v1.json (+ model_v1.meta.json)
    >>> edges = matcher.predict(records)  # identity.edges rows, edge_type 'probabilistic'
"""

from __future__ import annotations

import json
import logging
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from lakecdp.identity.backends import Backend, backend_for
from lakecdp.identity.blocking import populated_rules, rule_label
from lakecdp.identity.comparisons import settings_creator
from lakecdp.identity.config import IdentityConfig
from lakecdp.identity.deterministic import EDGE_SCHEMA
from lakecdp.identity.frequencies import name_shares, register_term_frequencies, tf_columns
from lakecdp.identity.model_store import (
    MODEL_FILE_RE,
    ModelMismatchError,
    SavedModel,
    apply_parameters,
    model_fingerprint,
    names_path,
    splink_version,
)
from lakecdp.identity.prepare import prepare_for_matching, row_count
from lakecdp.identity.training import (
    UnseenLevels,
    floor_m_probabilities,
    populated_share,
    prior_rule_recall,
    u_sample_size,
)

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import SparkSession
    from splink import Linker
    from splink.internals.blocking_rule_creator import BlockingRuleCreator
    from splink.internals.splink_dataframe import SplinkDataFrame

    from lakecdp.identity.config import TrainingSettings
    from lakecdp.identity.prepare import Prepared

logger = logging.getLogger(__name__)


_PREDICTION_SCHEMA = (
    "record_id_l string, record_id_r string, match_key string, match_probability double, match_weight double"
)


class ProbabilisticMatcher:
    """Trains, versions and applies the Splink model.

    Args:
        config: the identity config (``backend`` and ``model`` sections).
        spark: the session (input and output are Spark DataFrames for both backends).
        model_dir: folder of ``model_v<N>.json`` files and their ``.meta.json``.

    Example:
        >>> matcher = ProbabilisticMatcher(config, spark=spark, model_dir=path)
        >>> edges = matcher.predict(records)  # trains model_v1 first if none exists
    """

    def __init__(self, config: IdentityConfig, *, spark: SparkSession | None, model_dir: Path | str) -> None:
        self.config = config
        self.spark = spark
        self.model_dir = Path(model_dir)
        self.backend_name = config.backend
        self.run_id: str | None = None
        self._model: SavedModel | None = None
        # seconds the last train() took (0.0 when this matcher trained nothing)
        self.train_seconds = 0.0

    # -- model files ------------------------------------------------------------------
    def versions(self) -> list[int]:
        if not self.model_dir.is_dir():
            return []
        found = (MODEL_FILE_RE.match(p.name) for p in self.model_dir.iterdir())
        return sorted(int(m.group("version")) for m in found if m)

    def model_path(self, version: int) -> Path:
        return self.model_dir / f"model_v{version}.json"

    def load(self, version: int | None = None) -> SavedModel:
        """The saved model ``version`` (default: the newest); error when none exists."""
        versions = self.versions()
        if not versions:
            raise FileNotFoundError(f"{self.model_dir}: no model_v<N>.json; train one first")
        chosen = versions[-1] if version is None else version
        path = self.model_path(chosen)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: model version {chosen} not found; have {versions}")
        meta_path = path.with_name(f"model_v{chosen}.meta.json")
        metadata = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
        expected = model_fingerprint(self.config)
        if metadata.get("fingerprint") not in (None, expected):
            raise ModelMismatchError(
                f"{path}: trained for another model configuration "
                f"({metadata.get('fingerprint')} != {expected}); train a new version with "
                f"`lakecdp identity --retrain`"
            )
        self._model = SavedModel(version=chosen, path=path, metadata=metadata)
        return self._model

    def model(
        self, records: DataFrame | None = None, *, retrain: bool = False, prepared: Prepared | None = None
    ) -> SavedModel:
        """The model to apply: the newest saved one, or a new one trained on ``records``
        (``prepared``: ``prepare_for_matching(records)`` when the caller has it already)."""
        if retrain or not self.versions():
            if records is None:
                raise ValueError("no trained model yet and no records to train on")
            self.train(records, prepared=prepared)
        return self._model if self._model is not None else self.load()

    # -- training ---------------------------------------------------------------------
    def train(self, records: DataFrame, *, prepared: Prepared | None = None) -> Path:
        """Train on ``records`` and save the next version.

        Prior from deterministic rules, u by random sampling, m by EM over each configured
        training blocking rule. Writes ``model_v<N>.json`` (Splink's own model JSON) and
        ``model_v<N>.meta.json`` (version, backend, fingerprint, record count, time).

        Returns:
            The path of the new model JSON.
        """
        from splink import Linker, block_on

        started = time.perf_counter()
        training = self.config.model.training
        backend = backend_for(self.config, self.spark)
        if prepared is None:
            prepared = prepare_for_matching(records, self.config)
        registered = backend.register(prepared, "train")
        linker = Linker(registered, settings_creator(self.config, backend.name), log_level=logging.WARNING)
        shares = name_shares(linker, registered) if "full_name" in tf_columns(self.config) else None

        prior_rules: list[str | BlockingRuleCreator] = [block_on(*r) for r in training.prior_rules]
        linker.training.estimate_probability_two_random_records_match(prior_rules, recall=training.prior_recall)
        linker.training.estimate_u_using_random_sampling(
            max_pairs=u_sample_size(training, row_count(prepared)), seed=training.seed
        )
        sessions = 0
        unseen = UnseenLevels()
        em_logger = logging.getLogger("splink.internals.expectation_maximisation")
        em_logger.addFilter(unseen)
        try:
            sessions = self._expectation_maximisation(linker, training)
        finally:
            em_logger.removeFilter(unseen)
        unseen.report()
        if sessions == 0:
            raise RuntimeError("no EM training session succeeded; too few records to train on?")
        if training.prior_recall_from_model:
            recall = prior_rule_recall(linker.misc.save_model_to_json(), training.prior_rules)
            if recall is not None:
                # m is measured where both sides hold a value: a rule over a column one source
                # lacks (a shop without birth dates) finds only the share of matches that have it
                share = 1.0
                if training.prior_recall_populated_share:
                    share = populated_share(prepared, training.prior_rules[0])
                    recall = max(recall * share, 0.01)
                logger.info(
                    "prior re-estimated with the trained recall %.3f of %s (%.3f of "
                    "same-name pairs have its columns on both sides)",
                    recall,
                    [rule_label(r) for r in training.prior_rules],
                    share,
                )
                linker.training.estimate_probability_two_random_records_match(prior_rules, recall=recall)
        path = self._save(linker, backend, training, sessions, shares)
        self.train_seconds = time.perf_counter() - started
        return path

    def _expectation_maximisation(self, linker: Linker, training: TrainingSettings) -> int:
        from splink import block_on

        sessions = 0
        for rule in training.em_blocking_rules:
            try:
                linker.training.estimate_parameters_using_expectation_maximisation(
                    block_on(*rule), estimate_without_term_frequencies=True
                )
                sessions += 1
            except Exception as exc:  # Splink raises plain exceptions for empty blocks
                logger.warning("EM on %s skipped: %s", rule_label(rule), exc)
        return sessions

    def _save(
        self,
        linker: Linker,
        backend: Backend,
        training: TrainingSettings,
        sessions: int,
        shares: dict[str, Any] | None,
    ) -> Path:
        version = (self.versions() or [0])[-1] + 1
        self.model_dir.mkdir(parents=True, exist_ok=True)
        path = self.model_path(version)
        model_json = floor_m_probabilities(linker.misc.save_model_to_json(), training.min_m_probability)
        path.write_text(json.dumps(model_json, indent=2))
        metadata = {
            "version": version,
            "backend": backend.name,
            "fingerprint": model_fingerprint(self.config),
            "trained_at": datetime.now(timezone.utc).isoformat(),
            "run_id": self.run_id,
            "em_sessions": sessions,
            "splink_version": splink_version(),
        }
        path.with_name(f"model_v{version}.meta.json").write_text(json.dumps(metadata, indent=2))
        if shares is not None:
            # the name frequencies are part of the model: every prediction with it uses these
            names_path(path).write_text(json.dumps(shares, ensure_ascii=False))
        logger.info("trained identity model v%d (%s) -> %s", version, backend.name, path)
        self._model = SavedModel(version=version, path=path, metadata=metadata)
        return path

    # -- applying ---------------------------------------------------------------------
    def settings_for(self, backend: str, model: SavedModel, rules: list[list[str]] | None = None) -> dict[str, Any]:
        settings = settings_creator(self.config, backend, rules=rules).create_settings_dict(backend)
        return apply_parameters(settings, json.loads(model.path.read_text()), model.path)

    def linker(
        self, prepared: Prepared, *, model: SavedModel | None = None, rules: list[list[str]] | None = None
    ) -> tuple[Linker, Backend, SplinkDataFrame]:
        """A Splink linker over ``prepared`` records with the trained parameters applied."""
        chosen = model or self.model()
        backend = backend_for(self.config, self.spark)
        registered = backend.register(prepared, "records")
        return self._linker_over(registered, backend, chosen, rules), backend, registered

    def _linker_over(
        self,
        registered: SplinkDataFrame,
        backend: Backend,
        model: SavedModel,
        rules: list[list[str]] | None = None,
    ) -> Linker:
        from splink import Linker

        settings = self.settings_for(backend.name, model, rules)
        # Splink's settings validation only logs warnings and parses every level's SQL again
        # (seconds per run); these comparisons come from validated config, the same ones the
        # training linker checked
        linker = Linker(registered, settings, log_level=logging.WARNING, validate_settings=False)
        saved = names_path(model.path)
        shares = json.loads(saved.read_text()) if saved.is_file() else None
        register_term_frequencies(linker, registered, self.config, shares)
        return linker

    def predict(self, records: DataFrame, *, retrain: bool = False) -> DataFrame:
        """Scored pairs at or above ``match_threshold`` (or the lower
        ``clustering.exclusive_link_probability``) as ``identity.edges`` rows.

        Trains a first model when none is saved (or when ``retrain``).
        """
        # cached: training, the populated-columns check and prediction each read it, and
        # its plan (regexes, the nickname map) is the costly part of moving it to Splink.
        # Spark backend: it stays cached while the (lazy) edges returned still read it
        prepared = prepare_for_matching(records, self.config).cache()
        chosen = self.model(records, retrain=retrain, prepared=prepared)
        rules = populated_rules(self.config, prepared)
        linker, backend, _ = self.linker(prepared, model=chosen, rules=rules)
        predictions = linker.inference.predict(
            threshold_match_probability=self.config.edge_floor,
            warning_mode="never",
        )
        edges = self._edges(backend, predictions, rules)
        if backend.name == "duckdb":  # the edges are already in local rows, not a plan over it
            prepared.unpersist()
        return edges

    def predict_incremental(self, new_records: DataFrame, existing_records: DataFrame) -> DataFrame:
        """Pairs new-vs-existing and new-vs-new only (never existing-vs-existing).

        Uses the saved model and term frequencies over existing + new records, through
        Splink 5's ``predict_between`` and ``predict_within``.
        """
        records = existing_records.unionByName(new_records)
        chosen = self.model(records)
        backend = backend_for(self.config, self.spark)
        prepared = prepare_for_matching(records, self.config)
        # the rules a full run over the same records would use (same populated columns)
        rules = populated_rules(self.config, prepared)
        registered, new_sdf, existing_sdf = backend.register_split(prepared, new_records.select("record_id"))
        linker = self._linker_over(registered, backend, chosen, rules)
        threshold = self.config.edge_floor
        between = linker.inference.predict_between(
            new_sdf, existing_sdf, threshold_match_probability=threshold, warning_mode="never"
        )
        within = linker.inference.predict_within(new_sdf, threshold_match_probability=threshold, warning_mode="never")
        return self._edges(backend, between, rules).unionByName(self._edges(backend, within, rules))

    # -- the duckdb backend over Arrow (lakecdp.identity.local), no Spark ----------------
    def predict_local(self, prepared: pa.Table, *, retrain: bool = False) -> pa.Table:
        """:meth:`predict` over records already prepared as an Arrow table (duckdb
        backend): the edges as an Arrow table."""
        if self.config.backend != "duckdb":
            raise ValueError("predict_local runs on the duckdb backend only")
        chosen = self.model(prepared, retrain=retrain, prepared=prepared)
        rules = populated_rules(self.config, prepared)
        started = time.perf_counter()
        linker, _, _ = self.linker(prepared, model=chosen, rules=rules)
        logger.info("linker with term frequencies: %.1f s", time.perf_counter() - started)
        started = time.perf_counter()
        predictions = linker.inference.predict(
            threshold_match_probability=self.config.edge_floor,
            warning_mode="never",
        )
        edges = self._edges_local(predictions, rules)
        logger.info("predict: %.1f s, %d pairs", time.perf_counter() - started, edges.num_rows)
        return edges

    def predict_incremental_local(self, prepared: pa.Table, new_ids: pa.Array) -> pa.Table:
        """:meth:`predict_incremental` over the prepared Arrow table of all records and
        the ``record_id`` values (an Arrow array) of the new ones."""
        import pyarrow as pa
        import pyarrow.compute as pc

        if self.config.backend != "duckdb":
            raise ValueError("predict_incremental_local runs on the duckdb backend only")
        chosen = self.model(prepared)
        backend = backend_for(self.config, self.spark)
        rules = populated_rules(self.config, prepared)
        is_new = pc.is_in(prepared.column("record_id"), value_set=new_ids)
        registered, new_sdf, existing_sdf = (
            backend.db_api.register(part, table_name=backend.table_name(label))
            for part, label in (
                (prepared, "records"),
                (prepared.filter(is_new), "new"),
                (prepared.filter(pc.invert(is_new)), "existing"),
            )
        )
        linker = self._linker_over(registered, backend, chosen, rules)
        threshold = self.config.edge_floor
        between = linker.inference.predict_between(
            new_sdf, existing_sdf, threshold_match_probability=threshold, warning_mode="never"
        )
        within = linker.inference.predict_within(new_sdf, threshold_match_probability=threshold, warning_mode="never")
        return pa.concat_tables([self._edges_local(between, rules), self._edges_local(within, rules)])

    def _edges_local(self, predictions: SplinkDataFrame, rules: list[list[str]]) -> pa.Table:
        """:meth:`_edges` in DuckDB: ``identity.edges`` rows as an Arrow table."""
        import pyarrow as pa

        # labels come from validated config (column names and '+'), never from data
        labels = " ".join(f"when '{i}' then '{rule_label(r)}'" for i, r in enumerate(rules))
        label = f"case cast(match_key as varchar) {labels} end" if labels else "null"
        relation = predictions.as_duckdbpyrelation()
        selected = relation.query(
            "predictions",
            f"""
            select least(record_id_l, record_id_r)::varchar as record_id_l,
                   greatest(record_id_l, record_id_r)::varchar as record_id_r,
                   'probabilistic' as edge_type,
                   coalesce({label}, cast(match_key as varchar)) as rule,
                   match_probability::double as match_probability,
                   match_weight::double as match_weight
            from predictions
        """,
        )
        assert selected is not None  # a select always gives a relation
        table = selected.to_arrow_table()
        return table.append_column("run_id", pa.array([self.run_id] * table.num_rows, pa.string()))

    def _edges(self, backend: Backend, predictions: SplinkDataFrame, rules: list[list[str]]) -> DataFrame:
        columns = ["record_id_l", "record_id_r", "match_key", "match_probability", "match_weight"]
        pairs = backend.to_spark(predictions, columns, _PREDICTION_SCHEMA)
        labels = [rule_label(r) for r in rules]
        label_map = F.create_map(*[x for i, lab in enumerate(labels) for x in (F.lit(str(i)), F.lit(lab))])
        left, right = F.col("record_id_l"), F.col("record_id_r")
        return pairs.select(
            F.least(left, right).alias("record_id_l"),
            F.greatest(left, right).alias("record_id_r"),
            F.lit("probabilistic").alias("edge_type"),
            F.coalesce(F.element_at(label_map, F.col("match_key").cast("string")), F.col("match_key")).alias("rule"),
            "match_probability",
            "match_weight",
            F.lit(self.run_id).cast("string").alias("run_id"),
        )


__all__ = [
    "EDGE_SCHEMA",
    "ModelMismatchError",
    "ProbabilisticMatcher",
    "prepare_for_matching",
    "settings_creator",
]
