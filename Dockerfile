# Two images, one per build target:
#   emulator  the local DashScope emulator alone (include/, its own distribution): compose's optional
#             `dashscope-emulator` service (profile "emulator"). Not part of the production image.
#   airflow   (the default, last stage) every Airflow service of docker-compose.yaml: the official Airflow
#             image of the pinned release plus this repo's provider and pipeline with their runtime
#             dependencies only (no test tools, no emulator), at the versions of the pinned lock.
# Both install with requirements.txt as constraints: exactly the versions the tests ran with.

FROM python:3.11-slim AS emulator
COPY requirements.txt /opt/talking-heads/requirements.txt
COPY include/pyproject.toml /opt/talking-heads/include/pyproject.toml
COPY include/dashscope_emulator /opt/talking-heads/include/dashscope_emulator
RUN pip install --no-cache-dir -c /opt/talking-heads/requirements.txt /opt/talking-heads/include \
 && useradd --create-home --uid 50000 emulator
USER emulator
EXPOSE 8000
ENTRYPOINT ["python", "-m", "dashscope_emulator"]
CMD ["--host", "0.0.0.0", "--port", "8000"]

FROM apache/airflow:3.3.2-python3.11 AS airflow
COPY --chown=airflow:root requirements.txt pyproject.toml README.md /opt/talking-heads/
COPY --chown=airflow:root plugins /opt/talking-heads/plugins
# The provider and the pipeline with their runtime dependencies, plus the `celery` extra that compose's
# CeleryExecutor deployment runs on (Celery provider, Redis client, Postgres driver).
RUN pip install --no-cache-dir -c /opt/talking-heads/requirements.txt "/opt/talking-heads[celery]"
