"""Filesystems this provider registers with Airflow's ``ObjectStoragePath`` (``get_provider_info()["filesystems"]``)."""
