"""What differs between the Airflow lines this package supports (3.1, 3.2, 3.3), in one place.

Every other module imports a name from here only when its home differs between the lines; everything the
three lines have in one place (``airflow.sdk``'s ``BaseOperator``, ``BaseHook``, ``ObjectStoragePath``,
``TriggerRule``, ``Param``, ``Asset``, ``BaseOperatorLink``, ``airflow.sdk.execution_time.xcom.XCom``,
``airflow.triggers.base``'s ``BaseTrigger``/``TriggerEvent``/``TaskSuccessEvent``, ...) is imported from
there directly. ``scripts/matrix.sh`` runs the unit tests, a ``dag.test()`` and the packaging test on each
line (constraints/airflow-X.Y.txt).

The shims:

* The task exceptions (``AirflowException``, ``AirflowFailException``, ``AirflowNotFoundException``,
  ``AirflowSkipException``, ``AirflowSensorTimeout``, ``DagRunTriggerException``): the Task SDK has them in
  ``airflow.sdk.exceptions`` from Airflow 3.2 (task-sdk 1.2) on; on Airflow 3.1 (task-sdk 1.1) that module
  holds only ``AirflowException`` and they live in ``airflow.exceptions``, which is what 3.1's task runner
  and ``Connection.get`` raise and catch. The SDK's module is tried first, so on 3.2 and 3.3 these are the
  very classes the Task SDK raises and catches. Drop this shim with the 3.1 floor.
"""

from __future__ import annotations

try:  # Airflow >= 3.2: the Task SDK's own classes (the ones it raises and catches)
    from airflow.sdk import exceptions as _home
    from airflow.sdk.exceptions import AirflowFailException as _probe  # noqa: F401 (absent on 3.1)
except ImportError:  # Airflow 3.1
    from airflow import exceptions as _home  # type: ignore[no-redef]

AirflowException = _home.AirflowException
AirflowFailException = _home.AirflowFailException
AirflowNotFoundException = _home.AirflowNotFoundException
AirflowSensorTimeout = _home.AirflowSensorTimeout
AirflowSkipException = _home.AirflowSkipException
DagRunTriggerException = _home.DagRunTriggerException

__all__ = [
    "AirflowException",
    "AirflowFailException",
    "AirflowNotFoundException",
    "AirflowSensorTimeout",
    "AirflowSkipException",
    "DagRunTriggerException",
]
