"""Alerts (freshrank.alerts): the JSON Lines log, keys, and the webhook against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from freshrank.alerts import (
    DATA_QUALITY,
    WEBHOOK_FAILED,
    WEBHOOK_URL_ENV_VAR,
    alerts_path,
    raise_alert,
    read_alerts,
)
from freshrank.config import AlertsConfig, Settings, load_settings
from freshrank.errors import ConfigError
from freshrank.quality import validate_staged
from freshrank.staging import stage_increment

SECRET_PATH = "/services/T000/B000/secret-token"


@dataclass
class Hook:
    """A webhook receiver: it responds to each POST with the next status of ``statuses`` (the last one repeats)."""

    statuses: list[int] = field(default_factory=lambda: [200])
    hang: bool = False
    """Send no response until the test ends, so the client times out."""
    requests: list[dict] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{SECRET_PATH}"


def _handler(hook: Hook) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - the name http.server dispatches to
            body = self.rfile.read(int(self.headers["Content-Length"]))
            hook.requests.append({"path": self.path, "content_type": self.headers["Content-Type"], "body": json.loads(body)})
            if hook.hang:
                hook.release.wait(timeout=30)
                return
            status = hook.statuses[min(len(hook.requests), len(hook.statuses)) - 1]
            self.send_response(status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, format: str, *args: object) -> None:
            return

    return Handler


@pytest.fixture
def serve() -> Iterator:
    """Start webhook receivers on 127.0.0.1 ports chosen by the OS; stop them after the test."""
    servers: list[tuple[ThreadingHTTPServer, Hook]] = []

    def start(hook: Hook) -> Hook:
        server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(hook))
        server.daemon_threads = True
        hook.port = server.server_address[1]
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append((server, hook))
        return hook

    yield start
    for server, hook in servers:
        hook.release.set()
        server.shutdown()
        server.server_close()


def with_webhook(settings: Settings, url: str, **options: object) -> Settings:
    alerts = AlertsConfig(
        webhook_url=url, webhook_timeout_seconds=0.5, webhook_retries=2, webhook_backoff_seconds=0.01, **options
    )
    return settings.model_copy(update={"alerts": alerts})


def test_alert_appended_without_webhook(core_settings: Settings) -> None:
    record = raise_alert(core_settings, DATA_QUALITY, "2024-03-05", "increment failed", {"rows": 3})
    assert read_alerts(core_settings) == [record]
    assert record["details"] == {"rows": 3}


def test_webhook_receives_slack_text(core_settings: Settings, serve) -> None:
    hook = serve(Hook())
    settings = with_webhook(core_settings, hook.url)

    raise_alert(settings, DATA_QUALITY, "2024-03-05", "increment 2024-03-05 failed validation")

    assert len(hook.requests) == 1
    request = hook.requests[0]
    assert request["path"] == SECRET_PATH
    assert request["content_type"] == "application/json"
    assert request["body"] == {"text": "[freshrank] data_quality alert for 2024-03-05: increment 2024-03-05 failed validation"}
    assert [alert["kind"] for alert in read_alerts(settings)] == [DATA_QUALITY]


def test_webhook_includes_record_when_asked(core_settings: Settings, serve) -> None:
    hook = serve(Hook())
    settings = with_webhook(core_settings, hook.url, webhook_include_alert=True)

    record = raise_alert(settings, DATA_QUALITY, "2024-03-05", "failed", {"rows": 7})

    assert hook.requests[0]["body"]["alert"] == record


def test_webhook_500_retried_then_logged(core_settings: Settings, serve) -> None:
    hook = serve(Hook(statuses=[500]))
    settings = with_webhook(core_settings, hook.url)

    record = raise_alert(settings, DATA_QUALITY, "2024-03-05", "failed")

    assert len(hook.requests) == 3
    alerts = read_alerts(settings)
    assert [alert["kind"] for alert in alerts] == [DATA_QUALITY, WEBHOOK_FAILED]
    failure = alerts[1]
    assert failure["details"]["attempts"] == 3
    assert failure["details"]["status"] == 500
    assert failure["details"]["alert_time"] == record["time"]
    assert "HTTP 500" in failure["message"]


def test_webhook_timeout_logged(core_settings: Settings, serve) -> None:
    hook = serve(Hook(hang=True))
    settings = with_webhook(core_settings, hook.url)

    raise_alert(settings, DATA_QUALITY, "2024-03-05", "failed")

    failures = read_alerts(settings, kind=WEBHOOK_FAILED)
    assert len(failures) == 1
    assert failures[0]["details"]["attempts"] == 3
    assert failures[0]["details"]["status"] is None
    assert all("timed out" in error for error in failures[0]["details"]["errors"])
    assert len(hook.requests) == 3


def test_webhook_recovers_after_503(core_settings: Settings, serve) -> None:
    hook = serve(Hook(statuses=[503, 200]))
    settings = with_webhook(core_settings, hook.url)

    raise_alert(settings, DATA_QUALITY, "2024-03-05", "failed")

    assert len(hook.requests) == 2
    assert read_alerts(settings, kind=WEBHOOK_FAILED) == []


def test_webhook_404_not_retried(core_settings: Settings, serve) -> None:
    hook = serve(Hook(statuses=[404]))
    settings = with_webhook(core_settings, hook.url)

    raise_alert(settings, DATA_QUALITY, "2024-03-05", "failed")

    assert len(hook.requests) == 1
    failures = read_alerts(settings, kind=WEBHOOK_FAILED)
    assert failures[0]["details"]["attempts"] == 1
    assert failures[0]["details"]["status"] == 404


def test_webhook_refused_connection_logged(core_settings: Settings) -> None:
    # Bind a port and close it again, so that nothing listens there.
    closed = ThreadingHTTPServer(("127.0.0.1", 0), _handler(Hook()))
    refused_port = closed.server_address[1]
    closed.server_close()
    settings = with_webhook(core_settings, f"http://127.0.0.1:{refused_port}{SECRET_PATH}")

    raise_alert(settings, DATA_QUALITY, "2024-03-05", "failed")

    failures = read_alerts(settings, kind=WEBHOOK_FAILED)
    assert failures[0]["details"]["attempts"] == 3
    assert "ConnectionRefusedError" in failures[0]["details"]["errors"][0]


def test_failure_record_hides_secret_path(core_settings: Settings, serve) -> None:
    hook = serve(Hook(statuses=[500]))
    settings = with_webhook(core_settings, hook.url)

    raise_alert(settings, DATA_QUALITY, "2024-03-05", "failed")

    assert "secret-token" not in alerts_path(settings).read_text()
    assert f"http://127.0.0.1:{hook.port}" in read_alerts(settings, kind=WEBHOOK_FAILED)[0]["message"]


def test_environment_url_overrides_config(core_settings: Settings, serve, monkeypatch: pytest.MonkeyPatch) -> None:
    configured = serve(Hook())
    from_env = serve(Hook())
    monkeypatch.setenv(WEBHOOK_URL_ENV_VAR, from_env.url)

    raise_alert(with_webhook(core_settings, configured.url), DATA_QUALITY, "2024-03-05", "failed")

    assert configured.requests == []
    assert len(from_env.requests) == 1


def test_keyed_alert_recorded_once(core_settings: Settings, serve) -> None:
    hook = serve(Hook())
    settings = with_webhook(core_settings, hook.url)

    first = raise_alert(settings, DATA_QUALITY, "2024-03-05", "failed", key="data_quality:2024-03-05:abc")
    second = raise_alert(settings, DATA_QUALITY, "2024-03-05", "failed again", key="data_quality:2024-03-05:abc")

    assert second == first
    assert len(read_alerts(settings)) == 1
    assert len(hook.requests) == 1


def test_torn_last_line_skipped(core_settings: Settings) -> None:
    path = alerts_path(core_settings)
    raise_alert(core_settings, DATA_QUALITY, "2024-03-04", "first")
    with path.open("a") as handle:
        handle.write('{"time": "2024-03-05T00:00:00+00:00", "kind": "da')

    raise_alert(core_settings, DATA_QUALITY, "2024-03-05", "after a torn write")

    assert [alert["message"] for alert in read_alerts(core_settings)] == ["first", "after a torn write"]


def test_webhook_url_must_be_http(tmp_path: Path) -> None:
    (tmp_path / "freshrank.yaml").write_text("alerts:\n  webhook_url: ftp://example.invalid/hook\n")
    with pytest.raises(ConfigError, match="must start with http:// or https://"):
        load_settings(tmp_path)


def test_failing_webhook_does_not_fail_validation(core_settings: Settings, serve) -> None:
    hook = serve(Hook(statuses=[500]))
    settings = with_webhook(core_settings, hook.url)
    day = date(2024, 3, 5)
    folder = settings.landing_dir / day.isoformat()
    folder.mkdir(parents=True)
    (folder / "events.csv").write_text("event_time,user_id,item_id,event_type\n2024-03-05T10:00:00Z,u1,i1,wishlist\n")

    stage_increment(settings, day)
    outcome = validate_staged(settings, day)

    assert not outcome.result.success
    assert outcome.quarantine is not None
    assert [alert["kind"] for alert in read_alerts(settings)] == [DATA_QUALITY, WEBHOOK_FAILED]
    assert len(hook.requests) == 3
