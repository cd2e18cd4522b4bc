"""The test-side names whose home differs between the Airflow lines the matrix runs (3.1, 3.2, 3.3).

The package's own shims (the task exceptions) are in ``dashscope_provider.compat``, and tests import them
from there; these are the ones only the tests use. ``scripts/matrix.sh`` runs the tests on
each line. Nothing here imports anything but Airflow, so it is as safe to import as ``airflow`` itself
(after ``tests/conftest.py`` has set ``AIRFLOW_HOME``).

* ``TaskDeferred``: in ``airflow.sdk.exceptions`` from 3.2 on, ``airflow.exceptions`` on 3.1.
* ``DagBag``: ``airflow.dag_processing.dagbag`` from 3.2 on, ``airflow.models.dagbag`` on 3.1.
* ``DagSerialization``: the DAG serializer is ``SerializedDAG`` on 3.1 (same ``to_dict``).
* ``ProvidersManagerTaskRuntime``: the Task SDK's own providers manager from 3.2 on; on 3.1 the task side
  reads core's ``ProvidersManager`` (the same ``hooks`` and ``filesystem_module_names``).
* ``AIRFLOW_V_3_2_PLUS``, ``AIRFLOW_V_3_3_PLUS``: for what a line lacks altogether. The connection form:
  3.3 reads it from provider info (``ProvidersManager.iter_connection_type_hook_ui_metadata``); 3.2 from the
  hook's ``get_ui_field_behaviour`` into ``ProvidersManager.field_behaviours``; 3.1 the same, but only under
  the API server's wtforms mock (without wtforms, a plain ``ProvidersManager`` has no form).
"""

from __future__ import annotations

from airflow import __version__ as _airflow_version
from packaging.version import Version

try:  # Airflow >= 3.2
    from airflow.sdk.exceptions import TaskDeferred
except ImportError:  # Airflow 3.1
    from airflow.exceptions import TaskDeferred  # type: ignore[assignment,no-redef]

try:  # Airflow >= 3.2
    from airflow.dag_processing.dagbag import DagBag
except ImportError:  # Airflow 3.1
    from airflow.models.dagbag import DagBag  # type: ignore[assignment,no-redef]

try:  # Airflow >= 3.2
    from airflow.serialization.serialized_objects import DagSerialization
except ImportError:  # Airflow 3.1
    from airflow.serialization.serialized_objects import (  # type: ignore[assignment,no-redef]
        SerializedDAG as DagSerialization,
    )

try:  # Airflow >= 3.2
    from airflow.sdk.providers_manager_runtime import ProvidersManagerTaskRuntime
except ImportError:  # Airflow 3.1
    from airflow.providers_manager import (  # type: ignore[assignment,no-redef]
        ProvidersManager as ProvidersManagerTaskRuntime,
    )

_AIRFLOW_VERSION = Version(Version(_airflow_version).base_version)
AIRFLOW_V_3_2_PLUS = Version("3.2.0") <= _AIRFLOW_VERSION
AIRFLOW_V_3_3_PLUS = Version("3.3.0") <= _AIRFLOW_VERSION

__all__ = [
    "AIRFLOW_V_3_2_PLUS",
    "AIRFLOW_V_3_3_PLUS",
    "DagBag",
    "DagSerialization",
    "ProvidersManagerTaskRuntime",
    "TaskDeferred",
]
