"""The Dagster UI and the `freshrank report` page in headless Chromium, against a home the test builds.

The home contains four synthetic days ending yesterday. They are the newest partitions, because
the UI plots metadata over the newest partitions. The third day has an unknown event type and
fails validation. dagster-webserver and a static file server for the report run on 127.0.0.1, and
the browser aborts every request to any other address. Screenshots go to ``test-artifacts/browser/``.
"""

from __future__ import annotations

import functools
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pandas as pd
import pytest

from freshrank.config import Settings, load_settings
from freshrank.increments import landed_days
from freshrank.plots import PLOT_TITLES
from freshrank.synthetic import ShopSpec, generate_shop
from orchestration.build import build_definitions
from orchestration.replay import replay
from orchestration.report_assets import DAILY_REPORT, PLOT_METADATA_PREFIX

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    pytest.skip(
        f"{CHROMIUM} is missing: install Debian's chromium (apt-get install chromium), as .ci/run does",
        allow_module_level=True,
    )
sync_api = pytest.importorskip(
    "playwright.sync_api", reason="the playwright package is missing: pip install -e '.[browser]'"
)

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "test-artifacts" / "browser"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DAYS = 4
BAD_DAY_INDEX = 2
PLANTED_ROWS = 20
WEBSERVER_START_TIMEOUT_S = 180
UI_TIMEOUT_MS = 45_000
# Wide enough that the whole asset graph fits at a zoom where nodes show full names.
VIEWPORT = {"width": 3000, "height": 1500}
# Dismisses the webserver's "join the community" dialog, which is shown once per browser profile.
DISMISS_COMMUNITY_DIALOG = "window.localStorage.setItem('communityNux', JSON.stringify('1'));"


@dataclass(frozen=True)
class UiHome:
    """The home the browser looks at."""

    settings: Settings
    days: list[date]
    bad_day: date

    @property
    def good_days(self) -> list[date]:
        return [day for day in self.days if day != self.bad_day]


@pytest.fixture(scope="module")
def ui_home(tmp_path_factory) -> UiHome:
    settings = load_settings(tmp_path_factory.mktemp("ui") / "home")
    start = datetime.now(timezone.utc).date() - timedelta(days=DAYS)
    generate_shop(settings.landing_dir, ShopSpec(days=DAYS, users=120, items=60, seed=3, start=start))
    bad_day = start + timedelta(days=BAD_DAY_INDEX)
    bad_file = settings.landing_dir / bad_day.isoformat() / "events.parquet"
    frame = pd.read_parquet(bad_file)
    frame.loc[frame.index[:PLANTED_ROWS], "event_type"] = "click"
    frame.to_parquet(bad_file, index=False)

    runs = {run.day: run for run in replay(settings, landed_days(settings.landing_dir))}
    assert runs[bad_day.isoformat()].check_passed is False, "the planted bad day passed validation"
    failed = [day for day, run in runs.items() if day != bad_day.isoformat() and not run.success]
    assert not failed, f"runs of {failed} failed; see the Dagster run logs under {settings.dagster_home}"

    report = subprocess.run(
        [sys.executable, "-m", "freshrank", "report", "--home", str(settings.home)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert report.returncode == 0, report.stdout + report.stderr
    return UiHome(settings, [start + timedelta(days=offset) for offset in range(DAYS)], bad_day)


@pytest.fixture(scope="module")
def asset_names(ui_home) -> list[str]:
    definitions = build_definitions(ui_home.settings)
    return sorted(key.to_user_string() for key in definitions.resolve_all_asset_keys())


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


@pytest.fixture(scope="module")
def webserver(ui_home, tmp_path_factory):
    """Base URL of dagster-webserver over the home's Dagster instance, loading the repository's workspace.yaml."""
    port = _free_port()
    log_path = tmp_path_factory.mktemp("webserver") / "webserver.log"
    environment = {
        **os.environ,
        "DAGSTER_HOME": str(ui_home.settings.dagster_home),
        "FRESHRANK_HOME": str(ui_home.settings.home),
    }
    command = [str(Path(sys.executable).with_name("dagster-webserver")), "-h", "127.0.0.1", "-p", str(port), "-w", "workspace.yaml"]
    with log_path.open("w") as log:
        process = subprocess.Popen(command, cwd=REPO, env=environment, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + WEBSERVER_START_TIMEOUT_S
        while not _answers(f"{base}/server_info"):
            if process.poll() is not None:
                pytest.fail(f"dagster-webserver exited with {process.returncode}:\n{log_path.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"dagster-webserver did not answer within {WEBSERVER_START_TIMEOUT_S} s:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.5)
        yield base
    finally:
        _stop(process)


def _stop(process: subprocess.Popen) -> None:
    """Stop the webserver and its code server, which run in the process group the test started."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=30)
            return
        except subprocess.TimeoutExpired:
            continue


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the base class names it so
        pass


@pytest.fixture(scope="module")
def report_server(ui_home):
    """Base URL of a static file server over the home, for the report page and its relative links."""
    handler = functools.partial(_QuietHandler, directory=str(ui_home.settings.home))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def browser(webserver, report_server, tmp_path_factory):
    """A Chromium profile in a fresh folder that may reach only the two local servers."""
    allowed = (webserver, report_server, "data:")
    blocked: list[str] = []

    def route(request_route) -> None:
        url = request_route.request.url
        if url.startswith(allowed):
            request_route.continue_()
        else:
            blocked.append(url)
            request_route.abort()

    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")),
            executable_path=str(CHROMIUM),
            args=CHROMIUM_FLAGS,
            headless=True,
            viewport=VIEWPORT,
        )
        context.set_default_timeout(UI_TIMEOUT_MS)
        sync_api.expect.set_options(timeout=UI_TIMEOUT_MS)
        context.add_init_script(DISMISS_COMMUNITY_DIALOG)
        context.route("**/*", route)
        yield context
        context.close()


@pytest.fixture
def page(browser, request):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page = browser.new_page()
    yield page
    page.screenshot(path=str(ARTIFACTS / f"{request.node.name}.png"), full_page=True)
    page.close()


def expect(locator):
    return sync_api.expect(locator)


def wait_until_opaque(page, locator) -> None:
    """Wait until a dialog's fade-in is over, so that a screenshot shows it as the operator sees it."""
    page.wait_for_function(
        "element => { for (let node = element; node; node = node.parentElement) {"
        " if (getComputedStyle(node).opacity !== '1') return false; } return true; }",
        arg=locator.element_handle(),
    )


MISSING_REPORT_ASSET = "build_definitions lacks the daily_report asset of orchestration/report_assets.py"


def test_definitions_include_report(asset_names):
    assert DAILY_REPORT in asset_names, MISSING_REPORT_ASSET


def test_graph_shows_every_asset(page, webserver, asset_names):
    page.goto(f"{webserver}/asset-groups")
    expect(page.locator("foreignObject").first).to_be_visible()
    page.keyboard.press("Alt+e")  # the graph's shortcut for "Expand all groups"
    nodes = page.locator("foreignObject")
    for name in asset_names:
        expect(nodes.get_by_text(name, exact=True).first).to_be_visible()
    expect(nodes.filter(has_text="Loading")).to_have_count(0)


def test_report_partitions_materialized(page, webserver, ui_home, asset_names):
    assert DAILY_REPORT in asset_names, MISSING_REPORT_ASSET
    page.goto(f"{webserver}/assets/{DAILY_REPORT}?view=partitions&partition={ui_home.days[-1]}")
    expect(page.get_by_text(f"Materialized ({len(ui_home.good_days)})")).to_be_visible()
    # The in-process replay stops a quarantined day after its ingest run, so its report
    # partition was never planned: missing, not failed.
    expect(page.get_by_text(re.compile(r"Missing \(\d+\)"))).to_be_visible()
    expect(page.get_by_text("Failed (0)")).to_be_visible()
    expect(page.locator("tr", has_text="day_state")).to_contain_text("published")


def test_report_partition_plots(page, webserver, ui_home, asset_names):
    assert DAILY_REPORT in asset_names, MISSING_REPORT_ASSET
    page.goto(f"{webserver}/assets/{DAILY_REPORT}?view=partitions&partition={ui_home.days[-1]}")
    for plot, title in PLOT_TITLES.items():
        page.locator("tr", has_text=f"{PLOT_METADATA_PREFIX}{plot}").get_by_text("[Show Markdown]").click()
        dialog = page.get_by_role("dialog")
        image = dialog.locator("img")
        expect(image).to_have_attribute("alt", title)
        loaded = page.wait_for_function("image => image.complete && image.naturalWidth", arg=image.element_handle())
        assert loaded.json_value() > 100, f"the {plot} image did not load"
        wait_until_opaque(page, dialog)
        page.screenshot(path=str(ARTIFACTS / f"daily_report_{plot}.png"))
        dialog.get_by_role("button", name="Close").click()
        expect(dialog).to_have_count(0)


def test_metadata_plotted_over_partitions(page, webserver, asset_names):
    assert DAILY_REPORT in asset_names, MISSING_REPORT_ASSET
    page.goto(f"{webserver}/assets/{DAILY_REPORT}?view=overview")
    page.get_by_text("Plots", exact=True).first.click()
    for key in ("rows_published", "champion_auc", "drift_share"):
        expect(page.get_by_text(key, exact=True)).to_be_visible()
    expect(page.locator("canvas").first).to_be_visible()


def test_failed_check_on_bad_day(page, webserver, ui_home):
    page.goto(f"{webserver}/assets/increment?view=checks")
    page.get_by_role("tab", name="Execution history").click()
    for day in ui_home.good_days:
        expect(page.locator("tr", has_text=day.isoformat()).get_by_text("Passed")).to_be_visible()
    bad_row = page.locator("tr", has_text=ui_home.bad_day.isoformat())
    expect(bad_row.get_by_text("Failed")).to_be_visible()

    bad_row.get_by_role("button").last.click()
    dialog = page.get_by_role("dialog")
    expect(dialog.locator("tr", has_text="event_type_known observed unexpected_rows")).to_contain_text(str(PLANTED_ROWS))
    expect(dialog.locator("tr", has_text="event_type_known threshold allowed_values")).to_contain_text("view, add_to_cart, purchase")
    wait_until_opaque(page, dialog)


def test_report_page_images(page, report_server, ui_home):
    page.goto(f"{report_server}/reports/report.html")
    expect(page.locator("figure img")).to_have_count(len(PLOT_TITLES))
    page.wait_for_function("() => Array.from(document.images).every(image => image.complete && image.naturalWidth > 0)")
    expect(page.locator("h2", has_text="Latest day")).to_contain_text(ui_home.days[-1].isoformat())
    expect(page.locator("table tr", has_text=ui_home.bad_day.isoformat()).first).to_contain_text("quarantined")


def test_report_links_open(page, report_server, ui_home):
    page.goto(f"{report_server}/reports/report.html")
    link = page.get_by_role("link", name="drift", exact=True).first
    with page.expect_navigation():
        link.click()
    assert page.url.startswith(f"{report_server}/reports/drift/")
    expect(page.locator("body")).not_to_be_empty()
