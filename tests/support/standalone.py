"""A real Spark standalone cluster on this machine: one master and N workers, each in its own
JVM, started from pyspark's own jars with ``spark-class`` (no separate Spark download).

Used by the cluster test to run the pipeline through ``spark-submit.sh`` exactly as on a
multi-node cluster (driver, master and executors in different processes), and handy for
trying spark-submit locally. Test support: not shipped in the wheel.

Example:
    >>> with StandaloneCluster(workers=2) as cluster:
    ...     subprocess.run(["./spark-submit.sh", "--master", cluster.master_url, "pipeline"])
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

logger = logging.getLogger(__name__)


def spark_home() -> Path:
    import pyspark

    return Path(pyspark.__file__).parent


class StandaloneCluster:
    """Start a master and ``workers`` workers on 127.0.0.1; stop them on exit."""

    def __init__(
        self,
        *,
        workers: int = 2,
        cores_per_worker: int = 1,
        memory_per_worker: str = "1g",
        work_dir: str | os.PathLike[str] | None = None,
        daemon_java_options: str = "",
    ) -> None:
        self.workers = workers
        self.daemon_java_options = daemon_java_options
        self.cores_per_worker = cores_per_worker
        self.memory_per_worker = memory_per_worker
        self._own_dir = work_dir is None
        self.work_dir = Path(work_dir or tempfile.mkdtemp(prefix="lakecdp-standalone-"))
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.port = 0  # the master's ports are chosen by the master (port 0) and read from its log
        self.web_port = 0
        self._processes: list[subprocess.Popen] = []

    @property
    def master_url(self) -> str:
        return f"spark://127.0.0.1:{self.port}"

    def _start(self, name: str, args: list[str], extra_env: dict[str, str]) -> None:
        env = {
            **os.environ,
            "SPARK_HOME": str(spark_home()),
            "SPARK_LOCAL_IP": "127.0.0.1",
            "SPARK_NO_DAEMONIZE": "1",
            # the master's and workers' own JVMs (not the executors': spark.executor.extraJavaOptions)
            "SPARK_DAEMON_JAVA_OPTS": self.daemon_java_options,
            **extra_env,
        }
        log = open(self.work_dir / f"{name}.log", "w")  # noqa: SIM115 - closed with the process
        process = subprocess.Popen(
            [str(spark_home() / "bin" / "spark-class"), *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        self._processes.append(process)

    def state(self) -> dict:
        """The master's JSON status (workers, their state and cores)."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.web_port}/json/", timeout=5) as response:
            return json.load(response)

    def _bound_ports(self) -> tuple[int, int] | None:
        """The master's RPC and web UI ports once its log says it bound them, else None.

        Both are started on port 0 so no other process can take a port picked in advance (a
        port picked free and bound later once served another JVM's HTML page to the status poll).
        """
        log = (self.work_dir / "master.log").read_text(errors="replace")
        rpc = re.search(r"Starting Spark master at spark://[^:\s]+:(\d+)", log)
        web = re.search(r"MasterWebUI: Bound MasterWebUI to \S+ and started at http://[^:\s]+:(\d+)", log)
        if rpc is None or web is None:
            return None
        return int(rpc.group(1)), int(web.group(1))

    def _check_alive(self) -> None:
        for process in self._processes:
            if process.poll() is not None:
                self.stop()
                raise RuntimeError(
                    f"a standalone cluster process exited with {process.returncode}; see logs in {self.work_dir}"
                )

    def start(self, *, timeout_s: float = 120) -> StandaloneCluster:
        self._start(
            "master",
            [
                "org.apache.spark.deploy.master.Master",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--webui-port",
                str(self.web_port),
            ],
            {},
        )
        deadline = time.monotonic() + timeout_s
        while (ports := self._bound_ports()) is None:
            self._check_alive()
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"standalone master did not bind its ports in {timeout_s}s; logs in {self.work_dir}")
            time.sleep(0.2)
        self.port, self.web_port = ports
        for index in range(self.workers):
            worker_dir = self.work_dir / f"worker-{index}"
            worker_dir.mkdir(parents=True, exist_ok=True)
            self._start(
                f"worker-{index}",
                [
                    "org.apache.spark.deploy.worker.Worker",
                    self.master_url,
                    "--host",
                    "127.0.0.1",
                    "--cores",
                    str(self.cores_per_worker),
                    "--memory",
                    self.memory_per_worker,
                    "--webui-port",
                    "0",
                    "--work-dir",
                    str(worker_dir),
                ],
                {},
            )
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                alive = [w for w in self.state().get("workers", []) if w.get("state") == "ALIVE"]
                if len(alive) >= self.workers:
                    logger.info("standalone cluster up at %s with %d workers", self.master_url, len(alive))
                    return self
            except (OSError, ValueError):  # not up yet, or not yet answering JSON
                pass
            time.sleep(1)
        self.stop()
        raise TimeoutError(f"standalone cluster not ready after {timeout_s}s; logs in {self.work_dir}")

    def stop(self) -> None:
        for process in reversed(self._processes):
            if process.poll() is None:
                try:
                    os.killpg(process.pid, 15)
                except ProcessLookupError:
                    continue
        for process in self._processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, 9)
        self._processes.clear()

    def cleanup(self) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.work_dir, ignore_errors=True)

    def __enter__(self) -> StandaloneCluster:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()
