"""The real KRaft broker: topics with partitions, messages produced by Spark land at known offsets."""

from __future__ import annotations

import pytest
from pyspark.testing import assertDataFrameEqual

from tests.support.kafka_broker import KafkaBroker, KafkaBrokerError, produce_messages, server_properties


@pytest.mark.kafka
def test_produce_to_partitions_and_read_back_offsets(spark, kafka_broker, kafka_topic_factory):
    topic = kafka_topic_factory("broker-roundtrip", partitions=2)
    produce_messages(spark, kafka_broker, topic, ["a0", "a1", "a2"], partition=0)
    produce_messages(spark, kafka_broker, topic, ["b0", "b1"], keys=["k0", "k1"], partition=1)

    read = (
        spark.read.format("kafka")
        .option("kafka.bootstrap.servers", kafka_broker)
        .option("subscribe", topic)
        .option("startingOffsets", "earliest")
        .load()
        .selectExpr("topic", "partition", "offset", "CAST(key AS STRING) AS key", "CAST(value AS STRING) AS value")
    )
    assertDataFrameEqual(
        read,
        [
            (topic, 0, 0, None, "a0"),
            (topic, 0, 1, None, "a1"),
            (topic, 0, 2, None, "a2"),
            (topic, 1, 0, "k0", "b0"),
            (topic, 1, 1, "k1", "b1"),
        ],
    )


@pytest.mark.kafka
def test_topic_names_are_checked_before_any_jvm_call(kafka_broker_process):
    with pytest.raises(ValueError, match="invalid Kafka topic name 'bad topic'"):
        kafka_broker_process.create_topic("bad topic")
    with pytest.raises(ValueError, match="partitions must be >= 1, got 0"):
        kafka_broker_process.create_topic("fine", partitions=0)


def test_broker_not_started_has_no_bootstrap_servers(tmp_path):
    broker = KafkaBroker(work_dir=tmp_path)
    with pytest.raises(KafkaBrokerError, match="not running; call start"):
        _ = broker.bootstrap_servers


def test_server_properties_is_single_node_kraft(tmp_path):
    text = server_properties(broker_port=9092, controller_port=9093, log_dir=tmp_path / "data")
    lines = dict(line.split("=", 1) for line in text.splitlines())
    assert lines["process.roles"] == "broker,controller"
    assert lines["node.id"] == "1"
    assert lines["controller.quorum.bootstrap.servers"] == "127.0.0.1:9093"
    assert lines["listeners"] == "PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093"
    assert lines["offsets.topic.replication.factor"] == "1"
    assert lines["num.partitions"] == "1"
    assert lines["log.dirs"] == str(tmp_path / "data")


def test_cluster_ids_never_look_like_an_option():
    # one in 64 random ids starts with "-", which kafka-storage's argparse reads as a flag
    from tests.support.kafka_broker import _cluster_id

    ids = [_cluster_id() for _ in range(2000)]
    assert all(len(i) == 22 and not i.startswith("-") for i in ids)
    assert len(set(ids)) == 2000
