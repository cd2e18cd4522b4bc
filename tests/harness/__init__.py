"""What the tests and the benchmarks share to run things for real, in one importable place.

* :mod:`tests.harness.services`: the backing services of a deployment as local processes on 127.0.0.1
  (Postgres, Redis, an S3 server), each a context manager; ``free_port``, ``wait_until``, ``serve_http``.
* :mod:`tests.harness.samples`: the emulator's sample media served over HTTP, and input rows that use them.
* :mod:`tests.harness.cluster`: real Airflow components as processes: ``AirflowCluster`` (api-server,
  scheduler with LocalExecutor, dag-processor, triggerer) and ``CeleryAirflowCluster`` (docker-compose.yaml's
  topology: CeleryExecutor, Postgres, Redis, Celery workers). Used by tests/integration and benchmarks/.
* :mod:`tests.harness.reliability`: valid rows, ``talking_heads`` runs through ``dag.test()``, and the
  bookkeeping that maps the emulator's tasks, bills and submits back to rows (tests/reliability).
* :mod:`tests.harness.s3_proxy`: ``FaultyS3Proxy``, a proxy in front of an S3 server that cuts uploads.

Nothing here is imported on ``import tests.harness``: each module pulls in only what it needs.
"""
