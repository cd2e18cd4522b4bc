# The image for every Airflow service in docker-compose.yaml: the official Airflow image of the pinned
# release plus this repo's pinned lock and its provider package.
FROM apache/airflow:3.3.2-python3.11
COPY --chown=airflow:root requirements.txt pyproject.toml /opt/talking-heads/
COPY --chown=airflow:root plugins /opt/talking-heads/plugins
COPY --chown=airflow:root include /opt/talking-heads/include
RUN pip install --no-cache-dir -r /opt/talking-heads/requirements.txt \
 && pip install --no-cache-dir --no-deps /opt/talking-heads
