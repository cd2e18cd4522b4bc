"""``oss://bucket/key`` for Airflow's ``ObjectStoragePath``: Alibaba Cloud OSS (``ossfs``/``oss2``).

Airflow finds this module through ``get_provider_info()["filesystems"]`` and calls :func:`get_fs` with the
path's ``conn_id``, as for ``s3://`` (``airflow.providers.amazon.aws.fs.s3``). Airflow imports every
provider's filesystem module the first time any ``ObjectStoragePath`` is used, in every task process,
so this one stays light: the filesystem (:mod:`dashscope_provider.fs.oss_filesystem`, with ``oss2`` and
``ossfs``, about 0.9 s to import) is imported when an ``oss://`` path is first used. Connections and
what the filesystem adds to ``ossfs``: ``docs/storage.md``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dashscope_provider.fs.oss_filesystem import AirflowOSSFileSystem

schemes = ["oss"]


def get_fs(conn_id: str | None, storage_options: dict[str, Any] | None = None) -> AirflowOSSFileSystem:
    """The filesystem for ``oss://`` paths of ``conn_id`` (``None``: the environment's OSS settings).

    :param conn_id: an Airflow connection of type ``oss`` (Alibaba provider) or any type with login/password.
    :param storage_options: keyword arguments for the filesystem; they win over the connection.
    """
    from dashscope_provider.fs.oss_filesystem import make_filesystem

    return make_filesystem(conn_id, storage_options)


def __getattr__(name: str) -> Any:
    # AirflowOSSFileSystem, register_fsspec_implementation, the size constants...: from the implementation,
    # imported on first use.
    from dashscope_provider.fs import oss_filesystem

    try:
        return getattr(oss_filesystem, name)
    except AttributeError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
