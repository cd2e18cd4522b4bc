"""What a person sees: Airflow's own UI, served by a real ``airflow api-server`` (simple auth manager, all
admins) with a scheduler, dag-processor and triggerer (``tests/harness/cluster.py``), driven by headless
Debian Chromium through Playwright. The cluster is the session's shared one (``shared_cluster`` in
``tests/conftest.py``, which ``tests/integration/test_continuation.py`` also uses).

Screens: the ``dashscope`` connection form and its **Test** button; the ``talking_heads`` trigger form;
the run's grid (one mapped entry per row, with its state), its note, and the tasks' extra links.
Screenshots go to ``test-artifacts/browser/`` (``TALKING_HEADS_DOCS_SCREENSHOTS=1``: also ``docs/ui_*.png``).
Each assertion names something only this provider and DAG put on the page.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import requests
from dashscope_emulator import EmulatorServer
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.conftest import S3_BUCKET, SHARED_KEY, SharedCluster
from tests.harness.cluster import AirflowCluster
from tests.harness.samples import sample_row

pytestmark = pytest.mark.integration
# The UI's own pace on a loaded machine (the everyday tier runs a cluster module beside this one): a saved
# connection took over Playwright's default 5 s to reach the list once. A real failure still fails.
expect.set_options(timeout=20_000)

REPO_ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO_ROOT / "test-artifacts" / "browser"
CHROMIUM = "/usr/bin/chromium"
KEY = SHARED_KEY
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def _shot(page: Page, name: str) -> Path:
    """Save a screenshot as a test artifact (and as docs/ui_{name}.png when asked)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    if os.environ.get("TALKING_HEADS_DOCS_SCREENSHOTS") == "1":
        shutil.copyfile(path, REPO_ROOT / "docs" / f"ui_{name}.png")
    return path


class UI:
    """The running cluster, the emulator, the sample media's URL and one browser."""

    def __init__(self, cluster: AirflowCluster, emulator: EmulatorServer, media: str, boxes: dict, browser: Browser):
        self.cluster, self.emulator, self.media, self.boxes, self.browser = cluster, emulator, media, boxes, browser
        self.base = f"http://127.0.0.1:{cluster.port}"

    def page(self) -> Page:
        page = self.browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(30_000)
        return page


@pytest.fixture(scope="module")
def ui(shared_cluster: SharedCluster, moto_s3: str) -> Iterator[UI]:
    """The session's shared cluster (``dashscope_default`` on a fast emulator, ``aws_default`` on moto, the
    connection **Test** button on) and one headless Chromium for the module."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is not installed (scripts/system_deps.sh installs it)")
    # The run writes to S3 (moto): its links are presigned https URLs, which the UI shows (it drops file://
    # links: only http(s), mailto and its own origin become buttons).
    os.environ["TH_BROWSER_S3"] = json.dumps({"endpoint_url": moto_s3, "region_name": "us-east-1"})
    emulator = shared_cluster.emulators["dashscope_default"]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield UI(shared_cluster.cluster, emulator, shared_cluster.media, shared_cluster.boxes, browser)
        finally:
            browser.close()


# -- the connection form -------------------------------------------------------------------------------------


def _add_connection(page: Page, ui: UI, conn_id: str, key: str, *, shot: str | None = None) -> None:
    page.goto(f"{ui.base}/connections")
    page.get_by_role("button", name="Add Connection").click()
    dialog = page.get_by_role("dialog")
    dialog.locator("input[name=connection_id]").fill(conn_id)
    kind = dialog.get_by_role("combobox")
    kind.fill("dashscope")
    page.get_by_role("option", name="DashScope", exact=True).click()
    # The provider's form: relabelled, with placeholders; schema, port and login hidden.
    expect(dialog.locator("label", has_text="Base URL")).to_be_visible()
    expect(dialog.locator("label", has_text="API key")).to_be_visible()
    labels = [text.strip() for text in dialog.locator("label").all_inner_texts()]
    assert not {"Host", "Password", "Login", "Port", "Schema"} & set(labels), labels
    for hidden in ("login", "port", "schema"):
        assert dialog.locator(f"input[name={hidden}]:visible").count() == 0, hidden
    host = dialog.locator("input[name=host]")
    expect(host).to_have_attribute("placeholder", "https://dashscope.aliyuncs.com")
    expect(dialog.locator("input[name=password]")).to_have_attribute("type", "password")
    host.fill(ui.emulator.base_url)
    dialog.locator("input[name=password]").fill(key)
    if shot:
        _shot(page, shot)
    dialog.get_by_role("button", name="Save").click()
    expect(dialog).to_be_hidden()  # saved (a refused save keeps the form open)
    # Listed once the list is loaded again. Not by waiting for the open list to refresh itself: on a loaded
    # machine Airflow's list, still loading when the form opened, kept its empty answer (twice in CI runs).
    page.goto(f"{ui.base}/connections")
    expect(_row(page, conn_id)).to_be_visible()


def _row(page: Page, conn_id: str) -> Any:
    cell = page.locator("td[data-testid=table-cell-connection_id]", has_text=re.compile(f"^{re.escape(conn_id)}$"))
    return page.get_by_role("row").filter(has=cell)


def _test_button(page: Page, ui: UI, conn_id: str) -> Any:
    page.goto(f"{ui.base}/connections")
    row = _row(page, conn_id)
    with page.expect_response(lambda r: r.url.endswith("/api/v2/connections/test")) as answer:
        row.get_by_role("button", name="Test Connection").click()
    return answer.value


def test_connection_form_and_test_button(ui: UI) -> None:
    page = ui.page()
    _add_connection(page, ui, "dashscope_ui", KEY, shot="connection_form")
    _add_connection(page, ui, "dashscope_ui_wrong_key", "sk-not-a-key-of-this-service")
    stored = ui.cluster.get("/connections/dashscope_ui")
    assert (stored["conn_type"], stored["host"], stored["port"]) == ("dashscope", ui.emulator.base_url, None)

    # Airflow 3.3.2's UI posts port 0 for a connection without a port (Number(null)); the API then takes
    # it for another endpoint and refuses ("Bad Request"), for every connection type that hides Port. When
    # this fails, Airflow has fixed it: drop the port-0 work-around below.
    refused = _test_button(page, ui, "dashscope_ui")
    assert refused.status == 400 and "differs from the stored connection" in refused.text()
    expect(page.get_by_text("Test Connection Failed")).to_be_visible()

    for conn_id in ("dashscope_ui", "dashscope_ui_wrong_key"):  # the work-around: store port 0
        ui.cluster.post(
            f"/connections/{conn_id}?update_mask=port",
            {"connection_id": conn_id, "conn_type": "dashscope", "port": 0},
            method="PATCH",
        )
    ok = _test_button(page, ui, "dashscope_ui")
    assert ok.json()["status"] is True
    expect(page.get_by_text(f"Connected to {ui.emulator.base_url}: API key accepted")).to_be_visible()
    _shot(page, "connection_test_ok")

    page.reload()
    wrong = _test_button(page, ui, "dashscope_ui_wrong_key")
    assert wrong.json()["status"] is False
    expect(page.get_by_text("The API key was refused")).to_be_visible()
    assert "sk-not-a-key" not in page.inner_text("body")  # the key is never shown back
    _shot(page, "connection_test_wrong_key")
    page.close()


# -- the trigger form, the run, the grid ----------------------------------------------------------------------


def _table(ui: UI, path: Path) -> Path:
    row = partial(sample_row, ui.media, ui.boxes)
    rows = [
        row("ada", "emo-v1", "portrait_square.png", "voice.wav"),
        row("ben", "emoji-v1", "portrait_emoji.png", driven_id="mengwa_kaixin"),
        row("cy-bad-pose", "emo-v1", "portrait_square.png", "voice.wav", emulator_error="InvalidFile.FacePose"),
    ]
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def _s3() -> Any:
    import boto3

    endpoint = json.loads(os.environ["TH_BROWSER_S3"])
    return boto3.client("s3", aws_access_key_id="testing", aws_secret_access_key="testing", **endpoint)


def _outcome_key(run_id: str) -> str:
    from talking_heads.storage import safe_name

    return f"ui-run/outcomes/{safe_name(run_id)}.csv"


def _field(dialog: Any, name: str) -> Any:
    return dialog.locator(f"[name=element_{name}]")


@pytest.fixture(scope="module")
def triggered(ui: UI, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """``talking_heads`` triggered from its form with a 3-row table; the run's id and where it wrote."""
    folder = tmp_path_factory.mktemp("ui-run")
    table = _table(ui, folder / "table.csv")
    output_root = f"s3://{S3_BUCKET}/ui-run"
    ui.cluster._wait(lambda: requests.get(f"{ui.cluster.api}/dags/talking_heads", timeout=5).ok, 120, "DAG")
    params = ui.cluster.get("/dags/talking_heads/details")["params"]
    page = ui.page()
    page.goto(f"{ui.base}/dags/talking_heads")
    page.get_by_role("button", name="Trigger").first.click()
    dialog = page.get_by_role("dialog")
    expect(dialog.get_by_text("Run Parameters")).to_be_visible()
    form = {}
    for name in params:
        field = _field(dialog, name)
        expect(field).to_have_count(1)
        root = dialog.locator("[data-scope=field][data-part=root]").filter(has=page.locator(f"[name=element_{name}]"))
        label = root.locator("label").first.inner_text().replace("*", "").strip()
        shown = field.is_checked() if field.get_attribute("type") == "checkbox" else field.input_value()
        form[name] = {"title": label, "description": root.inner_text(), "default": shown}
    _shot(page, "trigger_form")

    _field(dialog, "input_table").fill(str(table))
    _field(dialog, "output_root").fill(output_root)
    _field(dialog, "storage_conn_id").fill("aws_default")
    _field(dialog, "poll_interval_seconds").fill("0.2")
    unpause = dialog.get_by_text("Unpause talking_heads on trigger")
    if unpause.count() and not dialog.get_by_role("checkbox", name="Unpause talking_heads on trigger").is_checked():
        unpause.click()
    with page.expect_response(lambda r: "/dagRuns" in r.url and r.request.method == "POST") as answer:
        dialog.get_by_role("button", name="Trigger").click()
    run_id = answer.value.json()["dag_run_id"]
    started = time.monotonic()
    state = ui.cluster.wait_for_run("talking_heads", run_id, seconds=420)
    print(f"BROWSER run {run_id} ended {state} in {time.monotonic() - started:.1f}s")
    page.close()
    return {"run_id": run_id, "state": state, "output_root": output_root, "params": params, "form": form}


def test_trigger_form_shows_every_param_and_the_run_succeeds(triggered: dict[str, Any]) -> None:
    params, form = triggered["params"], triggered["form"]
    assert set(form) == set(params) and "notify_email" in form
    for name, param in params.items():
        schema = param["schema"]
        assert form[name]["title"] == schema["title"], name
        assert param["description"] in form[name]["description"], name
        default = param["value"]
        if isinstance(default, bool):
            assert form[name]["default"] is default, name
        elif isinstance(default, list):
            assert form[name]["default"] == "\n".join(default), name
        else:
            assert form[name]["default"] == ("" if default is None else str(default)), name
    assert triggered["state"] == "success"
    outcomes = pd.read_csv(_s3().get_object(Bucket=S3_BUCKET, Key=_outcome_key(triggered["run_id"]))["Body"])
    status = dict(outcomes[["row_id", "status"]].itertuples(index=False))
    assert status == {"ada": "succeeded", "ben": "succeeded", "cy-bad-pose": "failed"}


def test_grid_has_one_mapped_entry_per_row_the_note_and_the_links(ui: UI, triggered: dict[str, Any]) -> None:
    run_id = triggered["run_id"]
    page = ui.page()
    # The run's note: the outcome step's one-line summary, set through the REST API, shown on the run.
    page.goto(f"{ui.base}/dags/talking_heads/runs/{run_id}")
    note = ui.cluster.get(f"/dags/talking_heads/dagRuns/{run_id}")["note"]
    assert note.startswith("2 succeeded, 1 failed, 0 skipped of 3 rows · ")
    assert note.endswith(f"report: s3://{S3_BUCKET}/ui-run/reports/cost_report.html")
    expect(page.get_by_text(note)).to_be_visible()
    _shot(page, "run_note")

    # The grid's mapped steps: one entry per input row, named by its row_id, with its state.
    expected = {"generate.wait": {"ada": "Success", "ben": "Success", "cy-bad-pose": "Failed"}}
    expected["generate.download"] = {"ada": "Success", "ben": "Success"}  # cy-bad-pose: upstream failed
    for task_id, states in expected.items():
        page.goto(f"{ui.base}/dags/talking_heads/runs/{run_id}/tasks/{task_id}/mapped")
        rows = page.get_by_role("row").filter(has=page.locator("td"))
        expect(rows).to_have_count(3)
        seen = {}
        for text in rows.all_inner_texts():
            cells = [c.strip() for c in text.replace("\n", "\t").split("\t") if c.strip()]
            seen[cells[0]] = cells[1]
        assert {k: v for k, v in seen.items() if k in states} == states, seen
        if task_id == "generate.wait":
            _shot(page, "grid")

    # The extra links: buttons on each step's Details tab, resolving to the objects.
    page.goto(f"{ui.base}/dags/talking_heads/runs/{run_id}/tasks/record_outcomes/details")
    table_link = page.get_by_role("link", name="Outcome table")
    expect(table_link).to_be_visible()
    expect(page.get_by_role("link", name="Cost report")).to_be_visible()
    _shot(page, "task_links")
    outcomes = requests.get(table_link.get_attribute("href"), timeout=10)  # presigned: no credentials
    assert outcomes.ok and b"cy-bad-pose" in outcomes.content
    links = ui.cluster.get(f"/dags/talking_heads/dagRuns/{run_id}/taskInstances/record_outcomes/links")
    assert f"/{S3_BUCKET}/ui-run/reports/cost_report.html?" in links["extra_links"]["Cost report"]

    outcome = pd.read_csv(io.BytesIO(outcomes.content)).set_index("row_id")
    index = _map_indexes(ui, run_id)
    page.goto(f"{ui.base}/dags/talking_heads/runs/{run_id}/tasks/generate.wait/mapped/{index['cy-bad-pose']}/details")
    task_link = page.get_by_role("link", name="DashScope task")
    expect(task_link).to_have_attribute(
        "href", f"{ui.emulator.base_url}/api/v1/tasks/{outcome.loc['cy-bad-pose', 'task_id']}"
    )
    page.goto(f"{ui.base}/dags/talking_heads/runs/{run_id}/tasks/generate.download/mapped/{index['ada']}/details")
    video = requests.get(page.get_by_role("link", name="Stored video").get_attribute("href"), timeout=10)
    assert video.ok and len(video.content) == int(outcome.loc["ada", "video_bytes"])
    page.close()


def _map_indexes(ui: UI, run_id: str) -> dict[str, int]:
    """row_id -> map index of its generate steps (their rendered map index is the row_id)."""
    found = ui.cluster.task_instances("talking_heads", run_id)
    return {ti["rendered_map_index"]: ti["map_index"] for ti in found if ti["task_id"] == "generate.submit"}
