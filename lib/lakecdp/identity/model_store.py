"""A trained model as files: ``model_v<N>.json`` (Splink's model JSON, either backend's),
``model_v<N>.meta.json`` (version, backend, fingerprint, run) and ``model_v<N>.names.json``
(the name shares of training); the fingerprint that says which configuration a model fits.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lakecdp.identity.config import IdentityConfig

MODEL_FILE_RE = re.compile(r"^model_v(?P<version>\d+)\.json$")


class ModelMismatchError(ValueError):
    """A saved model does not fit the configured comparisons; retrain it."""


def model_fingerprint(config: IdentityConfig) -> str:
    """Hash of what decides a model's parameters; a saved model fits only the same hash."""
    payload = config.model.model_dump(mode="json", exclude={"match_threshold"})
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def apply_parameters(settings: dict[str, Any], model: dict[str, Any], source: Path) -> dict[str, Any]:
    """Copy the trained prior, m and u of ``model`` (any backend) onto ``settings``."""
    trained = {c["output_column_name"]: c for c in model.get("comparisons", [])}
    settings["probability_two_random_records_match"] = model["probability_two_random_records_match"]
    for comparison in settings["comparisons"]:
        name = comparison["output_column_name"]
        if name not in trained:
            raise ModelMismatchError(
                f"{source}: has no comparison {name!r}; train a new version with `lakecdp identity --retrain`"
            )
        saved_levels = trained[name]["comparison_levels"]
        levels = comparison["comparison_levels"]
        if len(saved_levels) != len(levels):
            raise ModelMismatchError(
                f"{source}: comparison {name!r} has {len(saved_levels)} levels, config has "
                f"{len(levels)}; train a new version with `lakecdp identity --retrain`"
            )
        for level, saved in zip(levels, saved_levels):
            for key in ("m_probability", "u_probability"):
                if key in saved:
                    level[key] = saved[key]
    return settings


def names_path(model_path: Path) -> Path:
    """``model_v<N>.names.json`` beside ``model_v<N>.json``: the name shares of training."""
    return model_path.with_name(model_path.name.replace(".json", ".names.json"))


@dataclass(frozen=True)
class SavedModel:
    version: int
    path: Path
    metadata: dict[str, Any]


def splink_version() -> str:
    import splink

    return splink.__version__
