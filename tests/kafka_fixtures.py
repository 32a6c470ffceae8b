"""The real Kafka broker for tests: one KRaft broker per test session, in its own JVM.

tests/conftest.py loads this module as a pytest plugin, so a test only asks for the fixture::

    @pytest.mark.kafka
    def test_something(spark, kafka_broker, kafka_topic_factory): ...

``kafka_broker`` is the bootstrap servers string (``127.0.0.1:<port>``).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator

import pytest

from tests.support.kafka_broker import KafkaBroker, fetch_kafka_broker


@pytest.fixture(scope="session")
def kafka_broker_process(tmp_path_factory) -> Iterator[KafkaBroker]:
    """The broker object (for topic admin); its data and log sit in the session's tmp dir."""
    # `make test` resolves the jars first; this keeps a bare `pytest` working on a fresh clone
    jars = fetch_kafka_broker()
    broker = KafkaBroker(jars_dir=jars, work_dir=tmp_path_factory.mktemp("kafka"))
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture(scope="session")
def kafka_broker(kafka_broker_process: KafkaBroker) -> str:
    """Bootstrap servers of the session's real Kafka broker."""
    return kafka_broker_process.bootstrap_servers


_topic_numbers = itertools.count(1)


@pytest.fixture
def kafka_topic_factory(kafka_broker_process: KafkaBroker) -> Callable[..., str]:
    """Create a fresh, uniquely named topic for one test: ``factory("web", partitions=2)``."""

    def create(prefix: str, *, partitions: int = 1) -> str:
        name = f"{prefix}-{next(_topic_numbers)}"
        kafka_broker_process.create_topic(name, partitions=partitions)
        return name

    return create
