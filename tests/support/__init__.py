"""Test and benchmark support that never ships in the wheel a Databricks job installs.

- :mod:`tests.support.kafka_broker`: a real Kafka broker (KRaft) in its own JVM, and the Maven
  resolution of its classpath (``make kafka-broker``);
- :mod:`tests.support.standalone`: a real Spark standalone cluster (master + workers);
- :mod:`tests.support.fault_server`: an HTTP server on 127.0.0.1 that injects faults;
- :mod:`tests.support.worlds`: the demo world, built once per test run and copied into each test
  that starts from it.

Imported as ``tests.support.<module>`` from the repository root (pytest's ``pythonpath = .``,
``python -m bench.<name>``); ``tests/test_packaging.py`` builds the wheel and checks none of it
is inside.
"""
