"""The realistic sample-data generator: a deterministic world of people and their raw sources.

Example:
    >>> from lakecdp.sample import generate, load_sample_config
    >>> generate(spark, landing="warehouse/landing", labels="warehouse/labels", people=5000,
    ...          seed=42, as_of=as_of, config=load_sample_config("conf"))
"""

from __future__ import annotations

from lakecdp.sample.config import SampleConfig, load_sample_config
from lakecdp.sample.generator import generate

__all__ = ["SampleConfig", "generate", "load_sample_config"]
