"""What only the demo, the tests and the benchmarks use; nothing in ``services/`` imports it.

- ``devkit.local_kafka`` / ``devkit.local_postgres``: a real Kafka broker (KRaft, official
  jars) and a real PostgreSQL on loopback, started by ``deploy/kafka/kafka-local`` and
  ``deploy/postgres/pg-local``.
- ``devkit.sinks``: the SMTP sink (aiosmtpd) and the Web Push service that checks VAPID and
  decrypts.
- ``devkit.demo``: ``reminders demo``, the whole system on this machine with a synthetic day.
- ``devkit.insights_samples``: the follow-up workload of the insights benchmark and tests.
- ``devkit.faults``: the fault scenarios of ``bench/faults.py`` and the fault tests.

Its extra dependencies (aiosmtpd) come with ``pip install 'e-afspraken-reminders[devkit]'``
(the ``dev`` extra includes them); a production install does not need them.
"""
