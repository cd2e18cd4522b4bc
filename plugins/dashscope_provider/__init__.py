"""Airflow provider for Alibaba Cloud DashScope (Model Studio) video synthesis (``emo-v1``, ``emoji-v1``).

Modules, one per role, as in Airflow's own providers:

* :mod:`dashscope_provider.hooks.dashscope`: ``DashScopeHook`` (submit, query, cancel, detect: HTTP to
  DashScope);
* :mod:`dashscope_provider.hooks.dashscope_async`: ``DashScopeAsyncHook`` (queries from triggers, rate
  limited per account);
* :mod:`dashscope_provider.operators.dashscope`: submit a task; detect the face boxes of an image;
* :mod:`dashscope_provider.sensors.dashscope`: wait for a task (deferrable);
* :mod:`dashscope_provider.triggers.dashscope`: the trigger behind the sensor;
* :mod:`dashscope_provider.transfers.dashscope_to_object_storage`: copy a result video to any storage;
* :mod:`dashscope_provider.models`: endpoints, task statuses, the parsed answers;
* :mod:`dashscope_provider.links`: the extra link from a task to its DashScope task (console or query URL);
* :mod:`dashscope_provider.connection`: base URL, API key and account of a ``dashscope`` connection;
* :mod:`dashscope_provider.retry`: the one retry policy (what may be sent again, and why);
* :mod:`dashscope_provider.rate_limit`: client-side pacing shared within a process;
* :mod:`dashscope_provider.exceptions`: what can go wrong, sorted by "could a task (and a bill) exist?".
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

#: The connection form (Airflow >= 3.2 reads it from here, without importing the hook): a base URL and
#: an API key. Extra stays visible for ``account`` (the Alibaba Cloud account of the key: its keys share
#: the rate limits) and HttpHook-style options (timeout, proxies, verify).
UI_FIELD_BEHAVIOUR: dict[str, Any] = {
    "hidden-fields": ["schema", "port", "login"],
    "relabeling": {"host": "Base URL", "password": "API key"},
    "placeholders": {
        "host": "https://dashscope.aliyuncs.com",
        "password": "sk-...",
        "extra": '{"account": "my-aliyun-account", "timeout": 60, "proxies": {"https": "http://proxy:3128"}}',
    },
}


def _register_oss_filesystem() -> None:
    """Make ``dashscope_provider.fs.oss_filesystem.AirflowOSSFileSystem`` fsspec's ``oss`` class (by name: imported on
    first use). Without it, an ``oss://`` path without ``conn_id`` runs on a bare, anonymous ossfs (whose
    ``exists()`` answers False on AccessDenied) and is parsed with no bucket (``oss:///bucket/key``)."""
    import fsspec

    fsspec.register_implementation("oss", "dashscope_provider.fs.oss_filesystem.AirflowOSSFileSystem", clobber=True)


_register_oss_filesystem()


def get_provider_info() -> dict[str, Any]:
    """Provider metadata read by Airflow's ProvidersManager (registers the ``dashscope`` connection type)."""
    return {
        "package-name": "airflow-dashscope-talking-heads",
        "name": "DashScope",
        "description": "Alibaba Cloud DashScope (Model Studio) video synthesis (emo-v1, emoji-v1) and face detection.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": "DashScope",
                "external-doc-url": "https://www.alibabacloud.com/help/en/model-studio/",
                "tags": ["ai"],
            }
        ],
        "connection-types": [
            {
                "hook-class-name": "dashscope_provider.hooks.dashscope.DashScopeHook",
                "hook-name": "DashScope",
                "connection-type": "dashscope",
                "ui-field-behaviour": UI_FIELD_BEHAVIOUR,
            }
        ],
        "hooks": [
            {
                "integration-name": "DashScope",
                "python-modules": ["dashscope_provider.hooks.dashscope", "dashscope_provider.hooks.dashscope_async"],
            },
        ],
        "operators": [
            {"integration-name": "DashScope", "python-modules": ["dashscope_provider.operators.dashscope"]},
        ],
        "sensors": [
            {"integration-name": "DashScope", "python-modules": ["dashscope_provider.sensors.dashscope"]},
        ],
        "triggers": [
            {"integration-name": "DashScope", "python-modules": ["dashscope_provider.triggers.dashscope"]},
        ],
        "filesystems": ["dashscope_provider.fs.oss"],
        # The UI reads every link's URL from XCom; registering the class names it as the provider's.
        "extra-links": ["dashscope_provider.links.DashScopeTaskLink"],
        "transfers": [
            {
                # "Common IO" is the integration of apache-airflow-providers-common-io (ObjectStoragePath).
                "source-integration-name": "DashScope",
                "target-integration-name": "Common IO",
                "python-module": "dashscope_provider.transfers.dashscope_to_object_storage",
            }
        ],
    }
