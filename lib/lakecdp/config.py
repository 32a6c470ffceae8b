"""The one place that reads configuration.

Every YAML file under ``conf/`` is validated by a pydantic model with ``extra="forbid"``:
an unknown key, a wrong type or a missing file is a :class:`ConfigError` that names the file
and the field. Models for later parts (sources, identity, segments, destinations) live next
to the code that uses them and are loaded through :func:`load_model` / :func:`load_models`.

Example:
    >>> project = load_project("conf", env="local")
    >>> project.environment.storage.warehouse
"""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

M = TypeVar("M", bound=BaseModel)


class ConfigError(ValueError):
    """A configuration file is missing or invalid; the message names file and field."""


class StrictModel(BaseModel):
    """Base for every config model: unknown keys are an error, never ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class SparkSettings(StrictModel):
    mode: Literal["local", "cluster", "databricks"] = "local"
    # local mode only; on a cluster spark-submit decides the master
    master: str = "local[2]"
    app_name: str = "lakecdp"
    conf: dict[str, str] = Field(default_factory=dict)


class StorageSettings(StrictModel):
    """Where tables live: path-based under ``warehouse`` (default) or in a catalog."""

    warehouse: str = "warehouse"
    # when set, tables are ``catalog.<schema>.<table>`` instead of paths
    catalog: str | None = None
    # catalog mode: schema for each layer (default: ``schema_prefix + layer``)
    schema_prefix: str = "cdp_"
    schemas: dict[str, str] = Field(default_factory=dict)


class Environment(StrictModel):
    """``conf/environments/<name>.yaml``."""

    version: Literal[1]
    name: str
    # which engine runs the steps that have two: "embedded" (DuckDB + delta-rs, one machine)
    # or "spark" (clusters, Databricks). Today: the segments step (SQL segments) and activation.
    engine: Literal["embedded", "spark"] = "spark"
    spark: SparkSettings = Field(default_factory=SparkSettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    # raw files arrive here, one folder per source
    landing: str = "warehouse/landing"
    # streaming checkpoints and Splink's Spark checkpoint dir
    checkpoints: str = "warehouse/_checkpoints"
    # fixed "now" for reproducible runs (demo, tests, benchmarks); None means the wall clock
    as_of: datetime | None = None
    # the time activation judges send windows at (SMS quiet hours in the customer's zone);
    # None means the wall clock. Pinned, like as_of, where runs must give the same deliveries
    # whenever they run (the demo, tests); retries and delivery timestamps keep the wall clock
    send_time: datetime | None = None

    @field_validator("as_of", "send_time")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value


class Project(StrictModel):
    """A loaded project: its root folder, conf folder and the chosen environment."""

    root: Path
    conf_dir: Path
    environment: Environment

    def path(self, value: str | os.PathLike[str]) -> Path:
        """Resolve a configured path: absolute as given, relative to the project root."""
        candidate = Path(value)
        return candidate if candidate.is_absolute() else (self.root / candidate).resolve()

    @property
    def warehouse(self) -> Path:
        return self.path(self.environment.storage.warehouse)

    @property
    def landing(self) -> Path:
        return self.path(self.environment.landing)

    @property
    def checkpoints(self) -> Path:
        return self.path(self.environment.checkpoints)

    def as_of(self) -> datetime:
        """The time every job computes as of: the configured one, else now (UTC)."""
        return self.environment.as_of or datetime.now(timezone.utc)


def _format_location(loc: tuple[Any, ...]) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        else:
            parts.append(("." if parts else "") + str(item))
    return "".join(parts) or "<root>"


#: the same safe constructors as ``yaml.SafeLoader`` on libyaml (when PyYAML was built with it)
_FAST_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def read_yaml(path: str | os.PathLike[str]) -> Any:
    """Parse one YAML file; a missing file or bad YAML raises :class:`ConfigError`."""
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"{file}: config file not found")
    text = file.read_text(encoding="utf-8")
    try:
        # libyaml's parser (~8x less CPU: every run reads the sources' config); on an error the
        # pure-Python one, whose message shows the line with a caret
        return yaml.load(text, Loader=_FAST_LOADER)
    except yaml.YAMLError:
        pass
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{file}:{where} invalid YAML: {exc}") from exc


def validate(data: Any, model: type[M], *, source: str) -> M:
    """Validate parsed data against ``model``; errors name ``source`` and each field."""
    if data is None:
        raise ConfigError(f"{source}: file is empty")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{_format_location(err['loc'])}: {err['msg']}" for err in exc.errors())
        raise ConfigError(f"{source}: {problems}") from exc


def load_model(path: str | os.PathLike[str], model: type[M]) -> M:
    """Load one YAML file into ``model``.

    Args:
        path: the YAML file.
        model: a :class:`StrictModel` subclass.

    Returns:
        The validated model.

    Example:
        >>> env = load_model("conf/environments/local.yaml", Environment)
    """
    return validate(read_yaml(path), model, source=str(path))


def load_models(folder: str | os.PathLike[str], model: type[M]) -> dict[str, M]:
    """Load every ``*.yaml`` in ``folder`` (sorted), keyed by file stem."""
    directory = Path(folder)
    if not directory.is_dir():
        raise ConfigError(f"{directory}: config folder not found")
    return {p.stem: load_model(p, model) for p in sorted(directory.glob("*.yaml"))}


def load_project(
    conf_dir: str | os.PathLike[str] = "conf",
    *,
    env: str | None = None,
) -> Project:
    """Load ``conf/environments/<env>.yaml`` (env defaults to ``$LAKECDP_ENV`` or ``local``).

    The project root is the folder that holds ``conf_dir``; relative paths in config are
    resolved against it, so a job behaves the same from any working directory.
    """
    conf = Path(conf_dir).resolve()
    name = env or os.environ.get("LAKECDP_ENV", "local")
    environment = load_model(conf / "environments" / f"{name}.yaml", Environment)
    return Project(root=conf.parent, conf_dir=conf, environment=environment)
