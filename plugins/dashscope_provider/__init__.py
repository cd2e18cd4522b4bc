"""Airflow provider for Alibaba Cloud DashScope (Model Studio) video synthesis."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def get_provider_info() -> dict[str, Any]:
    """Provider metadata read by Airflow's ProvidersManager (registers the ``dashscope`` conn type)."""
    return {
        "package-name": "airflow-dashscope-talking-heads",
        "name": "DashScope",
        "description": "Alibaba Cloud DashScope (Model Studio) video synthesis: emo-v1 and emoji-v1.",
        "versions": [__version__],
        "connection-types": [
            {
                "hook-class-name": "dashscope_provider.hooks.dashscope.DashScopeHook",
                "connection-type": "dashscope",
            }
        ],
    }
