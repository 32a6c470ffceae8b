"""A real single-node Kafka broker (KRaft, broker + controller in one JVM) for the tests and
benchmarks (not shipped: the wheel holds ``lakecdp`` only).

The broker runs from the Maven Central jars that :func:`fetch_kafka_broker` (``make
kafka-broker``, ``python -m tests.support.kafka_broker``) resolves into ``.jvm/kafka-broker``, in its own ``java`` process: those jars are never put on
Spark's classpath (Kafka's and Spark's Scala/Jackson versions differ). No Docker is needed.

Topics are created with Kafka's own ``Admin`` client from a tiny Java program compiled on
first use (Kafka 4 ships its topic command in ``kafka-tools``, which a broker classpath does
not contain). Test messages are produced with Spark's Kafka batch writer
(:func:`produce_messages`), so Python needs no Kafka client library.

Example:
    >>> with KafkaBroker() as broker:
    ...     broker.create_topic("web_events", partitions=2)
    ...     produce_messages(spark, broker.bootstrap_servers, "web_events", ['{"event_id": "w-1"}'])
"""

from __future__ import annotations

import atexit
import base64
import logging
import os
import shutil
import socket
import subprocess
import tempfile
import time
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from lakecdp.jvm import JVM_DIR, JarsMissingError, copy_dependencies

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
KAFKA_BROKER_DIR = JVM_DIR / "kafka-broker"
_DONE = ".resolved"


def fetch_kafka_broker(*, force: bool = False) -> Path:
    """Resolve a Kafka broker's classpath (``jvm/kafka-broker/pom.xml``) into its own folder,
    kept apart from Spark's jars; returns the folder."""
    if (KAFKA_BROKER_DIR / _DONE).exists() and not force:
        return KAFKA_BROKER_DIR
    copy_dependencies(REPO_ROOT / "jvm" / "kafka-broker" / "pom.xml", KAFKA_BROKER_DIR)
    (KAFKA_BROKER_DIR / _DONE).write_text("ok\n")
    return KAFKA_BROKER_DIR


# Kafka's own Admin client, run as `java -cp <broker jars>:<work dir> LakecdpKafkaAdmin ...`.
_ADMIN_CLASS = "LakecdpKafkaAdmin"
_ADMIN_SOURCE = r"""
import java.util.*;
import java.util.concurrent.ExecutionException;
import org.apache.kafka.clients.admin.*;
import org.apache.kafka.common.TopicPartitionInfo;
import org.apache.kafka.common.errors.TopicExistsException;

/** lakecdp's topic tool: create-topics <bootstrap> <name:partitions>... | delete-topics <bootstrap> <name>... */
public class LakecdpKafkaAdmin {
    public static void main(String[] args) throws Exception {
        Properties props = new Properties();
        props.put("bootstrap.servers", args[1]);
        props.put("request.timeout.ms", "15000");
        props.put("default.api.timeout.ms", "30000");
        try (Admin admin = Admin.create(props)) {
            List<String> names = new ArrayList<>();
            if (args[0].equals("create-topics")) {
                List<NewTopic> topics = new ArrayList<>();
                for (int i = 2; i < args.length; i++) {
                    String[] parts = args[i].split(":");
                    names.add(parts[0]);
                    topics.add(new NewTopic(parts[0], Integer.parseInt(parts[1]), (short) 1));
                }
                for (Map.Entry<String, org.apache.kafka.common.KafkaFuture<Void>> e
                        : admin.createTopics(topics).values().entrySet()) {
                    try {
                        e.getValue().get();
                    } catch (ExecutionException ex) {
                        if (!(ex.getCause() instanceof TopicExistsException)) throw ex;
                    }
                }
                // a topic is usable once every partition has a leader
                long deadline = System.currentTimeMillis() + 30000;
                while (true) {
                    boolean ready = true;
                    try {
                        for (TopicDescription d : admin.describeTopics(names).allTopicNames().get().values()) {
                            for (TopicPartitionInfo p : d.partitions()) ready &= p.leader() != null;
                        }
                    } catch (ExecutionException ex) {
                        ready = false;
                    }
                    if (ready) break;
                    if (System.currentTimeMillis() > deadline) throw new RuntimeException("topics have no leader: " + names);
                    Thread.sleep(100);
                }
            } else if (args[0].equals("delete-topics")) {
                for (int i = 2; i < args.length; i++) names.add(args[i]);
                admin.deleteTopics(names).all().get();
            } else {
                throw new IllegalArgumentException("unknown command " + args[0]);
            }
        }
    }
}
"""


def _die_with_parent() -> None:
    """Linux: SIGKILL the broker when the Python process that started it exits."""
    try:
        import ctypes
        import signal

        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux / no glibc: atexit still stops it
        pass


class KafkaBrokerError(RuntimeError):
    """The broker could not be started, or a topic command failed; the message has its log."""


def free_port() -> int:
    """A TCP port on the loopback interface that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _cluster_id() -> str:
    """Kafka's cluster id format: a UUID as 22 characters of URL-safe base64.

    Like Kafka's own ``Uuid.randomUuid``, never one starting with ``-``: the storage tool's
    argument parser would read that as an option and fail with "expected one argument".
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode("ascii").rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def server_properties(*, broker_port: int, controller_port: int, log_dir: Path) -> str:
    """The broker's ``server.properties``: one KRaft node, every replication factor 1."""
    settings = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.bootstrap.servers": f"127.0.0.1:{controller_port}",
        "listeners": f"PLAINTEXT://127.0.0.1:{broker_port},CONTROLLER://127.0.0.1:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{broker_port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "log.dirs": str(log_dir),
        # one partition unless a test asks for more; a single node cannot replicate
        "num.partitions": "1",
        "default.replication.factor": "1",
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        # Spark's writer may create a topic on first produce (demo convenience)
        "auto.create.topics.enable": "true",
        # no consumer-group rebalance wait: Spark assigns partitions itself anyway
        "group.initial.rebalance.delay.ms": "0",
        # a test broker keeps its data for the session only
        "log.retention.hours": "1",
        "log.segment.bytes": str(16 * 1024 * 1024),
    }
    return "".join(f"{key}={value}\n" for key, value in settings.items())


class KafkaBroker:
    """A single-node KRaft Kafka broker in its own JVM, on free loopback ports.

    Args:
        jars_dir: the broker classpath folder (default ``.jvm/kafka-broker``).
        work_dir: where config, data and logs go (default: a new temp folder, removed on stop).
        heap: the broker JVM's maximum heap.
        start_timeout: seconds to wait for the broker to accept a topic.

    Example:
        >>> broker = KafkaBroker().start()
        >>> broker.bootstrap_servers
        '127.0.0.1:40123'
        >>> broker.stop()
    """

    def __init__(
        self,
        *,
        jars_dir: str | os.PathLike[str] | None = None,
        work_dir: str | os.PathLike[str] | None = None,
        heap: str = "384m",
        start_timeout: float = 120.0,
    ) -> None:
        self.jars_dir = Path(jars_dir) if jars_dir is not None else KAFKA_BROKER_DIR
        self._own_work_dir = work_dir is None
        self.work_dir = Path(work_dir) if work_dir is not None else Path(tempfile.mkdtemp(prefix="lakecdp-kafka-"))
        self.heap = heap
        self.start_timeout = start_timeout
        self.broker_port = 0
        self.controller_port = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._admin_ready = False

    # -- paths ------------------------------------------------------------------------
    @property
    def classpath(self) -> str:
        return str(self.jars_dir / "*")

    @property
    def log_file(self) -> Path:
        return self.work_dir / "broker.log"

    @property
    def bootstrap_servers(self) -> str:
        if self._process is None:
            raise KafkaBrokerError("the broker is not running; call start() first")
        return f"127.0.0.1:{self.broker_port}"

    def _java(self) -> str:
        java_home = os.environ.get("JAVA_HOME")
        candidate = Path(java_home) / "bin" / "java" if java_home else None
        if candidate is not None and candidate.exists():
            return str(candidate)
        found = shutil.which("java")
        if found is None:
            raise KafkaBrokerError("java is not on PATH (Java 17 runs the Kafka broker)")
        return found

    def _log_tail(self, lines: int = 40) -> str:
        if not self.log_file.exists():
            return "(no broker log)"
        text = self.log_file.read_text(encoding="utf-8", errors="replace").splitlines()
        return "\n".join(text[-lines:])

    # -- lifecycle --------------------------------------------------------------------
    def start(self) -> KafkaBroker:
        """Write the config, format storage, start the JVM and wait until a topic can be created."""
        if self._process is not None:
            return self
        if not any(self.jars_dir.glob("kafka_2.13-*.jar")):
            raise JarsMissingError(
                f"Kafka broker jars not found in {self.jars_dir}; run `make kafka-broker` "
                "(or `python -m tests.support.kafka_broker`) first"
            )
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.broker_port, self.controller_port = free_port(), free_port()
        while self.controller_port == self.broker_port:
            self.controller_port = free_port()
        config = self.work_dir / "server.properties"
        config.write_text(
            server_properties(
                broker_port=self.broker_port,
                controller_port=self.controller_port,
                log_dir=self.work_dir / "data",
            ),
            encoding="utf-8",
        )
        jvm = [
            self._java(),
            f"-Xmx{self.heap}",
            "-Xms64m",
            "-XX:+UseSerialGC",
            "-Djava.awt.headless=true",
            "-cp",
            self.classpath,
        ]
        # a fresh cluster id each time: the temp log dir is new, so nothing to recover
        fmt = subprocess.run(
            [
                *jvm,
                "kafka.tools.StorageTool",
                "format",
                "--cluster-id",
                _cluster_id(),
                "--config",
                str(config),
                "--standalone",
                "--ignore-formatted",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if fmt.returncode != 0:
            raise KafkaBrokerError(
                f"formatting Kafka storage in {self.work_dir / 'data'} failed "
                f"(exit {fmt.returncode}):\n{fmt.stdout}\n{fmt.stderr}"
            )
        log = self.log_file.open("ab")
        self._process = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
            [*jvm, "kafka.Kafka", str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=self.work_dir,
            # its own process group: a Ctrl-C aimed at pytest does not race our clean stop
            start_new_session=True,
            # and it dies with us when we are killed without running atexit (SIGKILL, SIGTERM)
            preexec_fn=_die_with_parent,
        )
        log.close()
        atexit.register(self.stop)
        logger.info("kafka broker starting (pid %d) on 127.0.0.1:%d", self._process.pid, self.broker_port)
        started = time.monotonic()
        try:
            self._wait_for_port(started)
            # the port answers before the controller has elected itself: prove a topic works
            self.create_topic("_lakecdp_ready", partitions=1)
        except BaseException:
            self.stop()
            raise
        logger.info("kafka broker ready at %s in %.1fs", self.bootstrap_servers, time.monotonic() - started)
        return self

    def _wait_for_port(self, started: float) -> None:
        assert self._process is not None
        while not _port_open(self.broker_port):
            if self._process.poll() is not None:
                raise KafkaBrokerError(
                    f"the Kafka broker exited with code {self._process.returncode} before "
                    f"listening on {self.broker_port}; log {self.log_file}:\n{self._log_tail()}"
                )
            if time.monotonic() - started > self.start_timeout:
                raise KafkaBrokerError(
                    f"the Kafka broker did not listen on {self.broker_port} within "
                    f"{self.start_timeout:.0f}s; log {self.log_file}:\n{self._log_tail()}"
                )
            time.sleep(0.2)

    def stop(self, *, timeout: float = 15.0) -> None:
        """Stop the broker (SIGTERM, then SIGKILL after ``timeout``) and remove a temp work dir."""
        process, self._process = self._process, None
        if process is not None:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    logger.warning("kafka broker pid %d ignored SIGTERM; killing it", process.pid)
                    process.kill()
                    process.wait(timeout=timeout)
            logger.info("kafka broker stopped (exit %s)", process.returncode)
        try:
            atexit.unregister(self.stop)
        except Exception:  # pragma: no cover - interpreter shutting down
            pass
        if self._own_work_dir:
            shutil.rmtree(self.work_dir, ignore_errors=True)

    def __enter__(self) -> KafkaBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    # -- topics -----------------------------------------------------------------------
    def _compile_admin(self) -> Path:
        classes = self.work_dir / "admin"
        if (classes / f"{_ADMIN_CLASS}.class").exists():
            return classes
        classes.mkdir(parents=True, exist_ok=True)
        source = classes / f"{_ADMIN_CLASS}.java"
        source.write_text(_ADMIN_SOURCE, encoding="utf-8")
        javac = shutil.which("javac")
        if javac is None:
            raise KafkaBrokerError("javac is not on PATH; a JDK 17 is needed to create topics")
        result = subprocess.run(
            [javac, "-cp", self.classpath, "-d", str(classes), str(source)],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise KafkaBrokerError(f"compiling the topic tool failed:\n{result.stderr}")
        return classes

    def _admin(self, *args: str) -> None:
        classes = self._compile_admin()
        result = subprocess.run(
            [
                self._java(),
                "-Xmx128m",
                "-XX:+UseSerialGC",
                "-XX:TieredStopAtLevel=1",
                "-cp",
                f"{classes}{os.pathsep}{self.classpath}",
                _ADMIN_CLASS,
                args[0],
                self.bootstrap_servers,
                *args[1:],
            ],
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        if result.returncode != 0:
            raise KafkaBrokerError(
                f"kafka {args[0]} {' '.join(args[1:])} failed (exit {result.returncode}):\n"
                f"{result.stderr[-3000:]}\nbroker log {self.log_file}:\n{self._log_tail(20)}"
            )

    def create_topic(self, name: str, *, partitions: int = 1) -> None:
        """Create a topic (no error if it exists) and wait until every partition has a leader."""
        self.create_topics({name: partitions})

    def create_topics(self, topics: dict[str, int]) -> None:
        """Create several topics ``{name: partitions}`` with one admin call."""
        for name, partitions in topics.items():
            _check_topic(name)
            if partitions < 1:
                raise ValueError(f"topic {name!r}: partitions must be >= 1, got {partitions}")
        self._admin("create-topics", *(f"{n}:{p}" for n, p in topics.items()))

    def delete_topics(self, names: Sequence[str]) -> None:
        """Delete topics (an unknown topic is an error)."""
        for name in names:
            _check_topic(name)
        self._admin("delete-topics", *names)


def _check_topic(name: str) -> None:
    # Kafka's own rule: [a-zA-Z0-9._-], at most 249 characters
    if not name or len(name) > 249 or not all(c.isalnum() or c in "._-" for c in name):
        raise ValueError(f"invalid Kafka topic name {name!r}: use [a-zA-Z0-9._-], 1-249 chars")


def produce_messages(
    spark: SparkSession,
    bootstrap_servers: str,
    topic: str,
    values: Sequence[str],
    *,
    keys: Sequence[str | None] | None = None,
    partition: int | None = None,
) -> None:
    """Write ``values`` to ``topic`` with Spark's Kafka batch writer, in the given order.

    One Spark task writes them (a one-partition DataFrame), so messages sent to the same
    Kafka partition get consecutive offsets in list order.

    Args:
        values: message bodies (UTF-8).
        keys: optional message keys, one per value.
        partition: send every message to this partition (default: Kafka's partitioner).
    """
    from pyspark.sql import functions as F
    from pyspark.sql.types import StringType, StructField, StructType

    _check_topic(topic)
    if keys is not None and len(keys) != len(values):
        raise ValueError(f"keys has {len(keys)} items but values has {len(values)}")
    rows = [(keys[i] if keys is not None else None, value) for i, value in enumerate(values)]
    schema = StructType([StructField("key", StringType()), StructField("value", StringType())])
    # one partition, concatenated in order (no shuffle): offsets follow list order
    df = spark.createDataFrame(rows, schema).coalesce(1)
    if partition is not None:
        df = df.withColumn("partition", F.lit(partition))
    (
        df.write.format("kafka")
        .option("kafka.bootstrap.servers", bootstrap_servers)
        .option("topic", topic)
        # wait for the broker's ack of every message before the write returns
        .option("kafka.acks", "all")
        .save()
    )


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    print(fetch_kafka_broker(force="--force" in sys.argv[1:]))
