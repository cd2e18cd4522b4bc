"""The DashScope task link: where a person looks at a task, and never the key."""

from __future__ import annotations

from dashscope_provider.links import task_link_url


def test_emulator_and_other_base_urls_link_the_task_query() -> None:
    assert task_link_url("http://127.0.0.1:8000", "t-1") == "http://127.0.0.1:8000/api/v1/tasks/t-1"
    assert (
        task_link_url("https://proxy.example/dashscope/", "a/b") == "https://proxy.example/dashscope/api/v1/tasks/a%2Fb"
    )


def test_the_real_service_links_its_console() -> None:
    assert task_link_url("https://dashscope.aliyuncs.com", "t-1") == "https://bailian.console.aliyun.com/#task_id=t-1"
    intl = task_link_url("https://dashscope-intl.aliyuncs.com", "t-1")
    assert intl == "https://modelstudio.console.alibabacloud.com/#task_id=t-1"
    workspace = task_link_url("https://ws-1.cn-beijing.maas.aliyuncs.com", "t-1")
    assert workspace.startswith("https://bailian.console.aliyun.com/")
