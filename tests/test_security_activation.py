"""Security corpus for activation: webhook client limits (redirects, total deadline, response
cap, address policy), destination config refusals and secrets. Each case asserts the refusal
message and that nothing happened: no request reached the redirect target or a forbidden
address, no file was written outside the exports root, no secret in any message or reason.
Real HTTP servers on 127.0.0.1; no Spark."""

from __future__ import annotations

import json
import socket
import threading
import time
import tracemalloc
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import pytest

from lakecdp.activation.config import DestinationFile, FileDestination, WebhookSettings, load_destinations
from lakecdp.activation.job import _deliver_files, _export_folder
from tests.support.fault_server import FaultServer
from lakecdp.activation.webhook import WebhookClient
from lakecdp.config import ConfigError

TOKEN = "tok_live_5f1c9e0b7a"  # a bearer token that must never leave for anyone but the destination


def _items(*customer_ids: str) -> list[dict]:
    return [
        {
            "idempotency_key": f"k-{c}",
            "change_id": f"ch-{c}",
            "segment_id": "vip",
            "customer_id": c,
            "change_type": "entered",
        }
        for c in customer_ids
    ]


def _settings(url: str, **overrides) -> WebhookSettings:
    base = {
        "url": url,
        "allow_private_network": True,
        "batch_size": 10,
        "timeout_seconds": 1.0,
        "retry": {"max_attempts": 3, "base_delay_seconds": 0.01, "max_delay_seconds": 0.02},
    }
    base.update(overrides)
    return WebhookSettings.model_validate(base)


class _Server(ThreadingHTTPServer):
    """A 127.0.0.1 server whose handler is one function; records every request it gets."""

    daemon_threads = True

    def __init__(self, respond):
        self.respond = respond
        self.requests: list[dict] = []
        self.bytes_sent = 0
        super().__init__(("127.0.0.1", 0), _Handler)
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hook"

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self.shutdown()
        self.server_close()

    def handle_error(self, request, client_address):
        pass  # the client hanging up on a trickle or a huge body is the point


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):  # noqa: A002 - stdlib signature
        pass

    def _any(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.server.requests.append(
            {
                "method": self.command,
                "path": self.path,
                "authorization": self.headers.get("Authorization"),
                "body": body,
            }
        )
        self.server.respond(self)

    do_GET = do_POST = do_PUT = do_HEAD = _any


def _answer(handler, code: int, body: bytes = b"{}", headers: dict | None = None) -> None:
    handler.send_response(code)
    for name, value in (headers or {}).items():
        handler.send_header(name, value)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


# -- redirects ----------------------------------------------------------------------------
@pytest.mark.parametrize("code", [301, 302, 303, 307, 308])
def test_a_redirect_is_never_followed_and_the_token_stays_home(monkeypatch, code):
    monkeypatch.setenv("HOOK_TOKEN", TOKEN)
    with _Server(lambda h: _answer(h, 200)) as target:
        with _Server(lambda h: _answer(h, code, b"", {"Location": target.url})) as hook:
            settings = _settings(hook.url, auth={"type": "bearer", "token_env": "HOOK_TOKEN"})
            result = WebhookClient("crm", settings, run_id="r1").deliver(_items("c1", "c2"))

    assert result.delivered == [] and result.rejected == []
    assert [(i["customer_id"], code_) for i, _, code_, _ in result.dead] == [("c1", code), ("c2", code)]
    assert result.dead[0][1] == f"HTTP {code} redirect to '{target.url}' not followed (redirects are never followed)"
    assert len(hook.requests) == 1  # not retried in the run: the next runs retry it (retry.max_runs)
    assert hook.requests[0]["authorization"] == f"Bearer {TOKEN}"
    assert target.requests == []  # nothing, and so no token, reached the redirect target


# -- total deadline -----------------------------------------------------------------------
def _trickle_body(handler):
    handler.send_response(200)
    handler.send_header("Content-Length", "1000")
    handler.end_headers()
    for _ in range(1000):
        handler.wfile.write(b" ")
        handler.wfile.flush()
        time.sleep(0.5)


def _trickle_status_line(handler):
    for byte in b"HTTP/1.1 200 OK\r\n" * 50:
        handler.wfile.write(bytes([byte]))
        handler.wfile.flush()
        time.sleep(0.5)


@pytest.mark.parametrize("respond", [_trickle_body, _trickle_status_line], ids=["body", "status-line"])
def test_a_trickling_server_cannot_hold_the_client_past_its_deadline(respond):
    with _Server(respond) as server:
        client = WebhookClient(
            "crm", _settings(server.url, timeout_seconds=1.0, retry={"max_attempts": 1}), run_id="r1"
        )
        started = time.monotonic()
        result = client.deliver(_items("c1"))
        elapsed = time.monotonic() - started
    assert elapsed < 1.0 + 0.75, elapsed  # the deadline plus a little slack, not 500 s of trickle
    assert result.delivered == []
    assert result.dead[0][1] == (
        "gave up after 1 attempts; last: no complete answer within the 1 s deadline (timeout_seconds)"
    )


# -- response size cap --------------------------------------------------------------------
def _huge(handler):
    size = 400 * 1024 * 1024
    handler.send_response(200)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(size))
    handler.end_headers()
    chunk = b"0" * 65536
    for _ in range(size // len(chunk)):
        handler.wfile.write(chunk)
        handler.server.bytes_sent += len(chunk)


def test_a_huge_answer_is_not_read_whole():
    with _Server(_huge) as server:
        client = WebhookClient("crm", _settings(server.url, timeout_seconds=20, max_response_bytes=65536), run_id="r1")
        tracemalloc.start()
        started = time.monotonic()
        result = client.deliver(_items("c1", "c2"))
        elapsed = time.monotonic() - started
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        time.sleep(0.2)
        sent = server.bytes_sent
    assert result.delivered == []
    assert [i["customer_id"] for i, *_ in result.dead] == ["c1", "c2"]
    assert result.dead[0][1] == (
        "HTTP 200 answer larger than max_response_bytes (65,536); stopped reading, per-row results unknown"
    )
    assert len(server.requests) == 1
    assert elapsed < 5, elapsed
    assert peak < 8 * 1024 * 1024, peak  # far from 400 MB
    assert sent < 64 * 1024 * 1024, sent  # the server could only fill the socket buffers


# -- address policy ----------------------------------------------------------------------
def test_loopback_is_refused_at_connect_time_unless_allowed(monkeypatch):
    with FaultServer() as server:
        port = server.server_address[1]
        # 'localhost' is a name, not an IP literal: only the resolved address tells it is loopback
        for url in (f"http://localhost:{port}/hook", server.url):
            monkeypatch.setenv("HOOK_URL", url)
            client = WebhookClient("crm", _settings("${HOOK_URL}", allow_private_network=False), run_id="r1")
            result = client.deliver(_items("c1"))
            assert result.delivered == []
            reason = result.dead[0][1]
            assert reason.startswith(
                f"address policy: {'localhost' if 'localhost' in url else '127.0.0.1'} resolves to "
            )
            assert "is a loopback address (allowed only with allow_private_network: true); nothing was sent" in reason
        assert server.received == []
        # the same server with the destination's explicit permission
        allowed = WebhookClient("crm", _settings(server.url, allow_private_network=True), run_id="r1")
        assert len(allowed.deliver(_items("c1")).delivered) == 1


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("169.254.169.254", "169.254.169.254 is a cloud metadata address (never allowed)"),
        ("169.254.10.1", "169.254.10.1 is link-local (never allowed: cloud metadata lives there)"),
        ("::ffff:169.254.169.254", "169.254.169.254 is a cloud metadata address (never allowed)"),
        ("0.0.0.0", "0.0.0.0 is not a unicast host address (never allowed)"),
        ("10.1.2.3", None),  # private: allowed here, because allow_private_network is true
    ],
)
def test_a_name_resolving_to_metadata_is_refused_before_connecting(monkeypatch, address, why):
    # the one mock: DNS answering with the metadata address (no DNS server here)
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    monkeypatch.setattr(
        socket, "getaddrinfo", lambda host, port, *a, **k: [(family, socket.SOCK_STREAM, 6, "", (address, port))]
    )
    connects = []
    real_connect = socket.create_connection
    monkeypatch.setattr(
        socket,
        "create_connection",
        lambda target, *a, **k: connects.append(target) or real_connect(("127.0.0.1", 9), 0.01),
    )
    client = WebhookClient(
        "crm",
        _settings(
            "http://hooks.example.com/x", allow_private_network=True, timeout_seconds=0.5, retry={"max_attempts": 1}
        ),
        run_id="r1",
    )
    result = client.deliver(_items("c1"))
    assert result.delivered == []
    if why is None:
        assert connects == [(address, 80)]  # allowed, so the client did try that address
        return
    assert result.dead[0][1] == f"address policy: hooks.example.com resolves to {why}; nothing was sent"
    assert connects == []  # no connection was even attempted


# -- secrets never land in a reason -------------------------------------------------------
def test_a_destination_echoing_the_token_does_not_put_it_in_the_ledger(monkeypatch):
    monkeypatch.setenv("HOOK_TOKEN", TOKEN)
    monkeypatch.setenv("HOOK_KEY", "key_9d8c7b6a")

    def echo(handler):
        _answer(handler, 400, json.dumps({"error": "bad", "you_sent": dict(handler.headers)}).encode())

    with _Server(echo) as server:
        settings = _settings(
            server.url,
            batch_size=1,
            auth={"type": "bearer", "token_env": "HOOK_TOKEN"},
            headers={"X-Api-Key": "${HOOK_KEY}"},
        )
        result = WebhookClient("crm", settings, run_id="r1").deliver(_items("c1"))
    assert server.requests[0]["authorization"] == f"Bearer {TOKEN}"
    reason = result.rejected[0][1]
    assert reason.startswith('HTTP 400: {"error": "bad"')
    assert "Bearer [redacted]" in reason and TOKEN not in reason and "key_9d8c7b6a" not in reason


def test_a_payload_template_over_its_budget_sends_nothing():
    with FaultServer() as server:
        loop = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
        client = WebhookClient("crm", _settings(server.url, payload_template=loop), run_id="r1")
        started = time.monotonic()
        result = client.deliver(_items("c1"))
        assert time.monotonic() - started < 5
    assert server.received == []
    assert result.dead[0][1] == (
        "payload_template failed: RenderBudgetExceeded: render budget: more than "
        "1,000,000 loop iterations (max_loop_iterations)"
    )


# -- destination config ---------------------------------------------------------------------
CONFIG_CASES = [
    # (YAML body, field, message part, secret that must not be echoed)
    (
        'url: https://hooks.example.com/x\nheaders: {Authorization: "Bearer sk_live_abcdef123"}\n',
        "webhook.headers",
        "header 'Authorization' holds an inline secret; secrets are named by environment variable only",
        "sk_live_abcdef123",
    ),
    (
        "url: https://hooks.example.com/x\nheaders: {X-Api-Key: abcdef123456}\n",
        "webhook.headers",
        "header 'X-Api-Key' holds an inline secret",
        "abcdef123456",
    ),
    (
        'url: https://hooks.example.com/x\nheaders: {X-Note: "Bearer sk_live_abcdef123"}\n',
        "webhook.headers",
        "header 'X-Note' holds an inline secret",
        "sk_live_abcdef123",
    ),
    (
        "url: https://admin:hunter2pass@hooks.example.com/x\n",
        "webhook.url",
        "url holds credentials (user:password@host)",
        "hunter2pass",
    ),
    (
        "url: https://hooks.example.com/x?access_token=tok_abcdef123\n",
        "webhook.url",
        "url query parameter 'access_token' looks like a credential written inline",
        "tok_abcdef123",
    ),
    (
        'url: https://hooks.example.com/x\nheaders: {X-Trace: "a\\r\\nX-Injected: 1"}\n',
        "webhook.headers",
        "header 'X-Trace': value contains control characters (CR/LF)",
        None,
    ),
    (
        'url: https://hooks.example.com/x\nheaders: {"X-A\\r\\nX-B": "1"}\n',
        "webhook.headers",
        "is not a valid HTTP header name",
        None,
    ),
    (
        'url: https://hooks.example.com/x\nauth: {type: header, header: "X-Key\\r\\nX-Evil", token_env: K}\n',
        "webhook.auth.header",
        "is not a valid HTTP header name",
        None,
    ),
    (
        'url: https://hooks.example.com/x\npayload_template: |\n  {"items": {{ items | tojson }},\n'
        '   "n": {{ items | length }\n',
        "webhook.payload_template",
        "template syntax error at line 2: unexpected '}'",
        None,
    ),
    (
        "url: http://169.254.169.254/latest/meta-data/\nallow_private_network: true\n",
        "webhook",
        "url: 169.254.169.254 is a cloud metadata address (never allowed)",
        None,
    ),
    (
        "url: http://10.0.0.5/hook\n",
        "webhook",
        "url: 10.0.0.5 is a private address (allowed only with allow_private_network: true)",
        None,
    ),
    ("url: file:///etc/passwd\n", "webhook.url", "url must start with http:// or https://", None),
]


@pytest.mark.parametrize(("body", "field", "message", "secret"), CONFIG_CASES)
def test_destination_config_refusals_name_file_and_field(tmp_path, body, field, message, secret):
    folder = tmp_path / "destinations"
    folder.mkdir()
    (folder / "crm.yaml").write_text("version: 1\ntype: webhook\n" + body, encoding="utf-8")
    with pytest.raises(ConfigError) as error:
        load_destinations(tmp_path)
    text = str(error.value)
    assert text.startswith(f"{folder / 'crm.yaml'}: {field}: ")
    assert message in text
    if secret:
        assert secret not in text
        assert secret not in str(error.value.__cause__)  # nor in the chained traceback of a crash


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("../../etc", "path '../../etc' leaves <warehouse>/exports (no '..'); give a folder under it"),
        ("crm/../../../x", "path 'crm/../../../x' leaves <warehouse>/exports"),
        ("/tmp/evil", "path '/tmp/evil' is absolute; give a folder under <warehouse>/exports"),
        ("~/evil", "path '~/evil' is absolute"),
    ],
)
@pytest.mark.parametrize("kind", ["file", "hashed_audience"])
def test_an_export_path_leaving_the_exports_root_is_refused(tmp_path, path, message, kind):
    folder = tmp_path / "destinations"
    folder.mkdir()
    (folder / "out.yaml").write_text(f"version: 1\ntype: {kind}\npath: '{path}'\n", encoding="utf-8")
    with pytest.raises(ConfigError) as error:
        load_destinations(tmp_path)
    assert str(error.value).startswith(f"{folder / 'out.yaml'}: {kind}.path: ")
    assert message in str(error.value)


def test_a_symlink_out_of_the_exports_root_is_refused_and_nothing_is_written(tmp_path):
    warehouse, outside = tmp_path / "warehouse", tmp_path / "outside"
    (warehouse / "exports").mkdir(parents=True)
    outside.mkdir()
    (warehouse / "exports" / "crm").symlink_to(outside, target_is_directory=True)
    ctx = SimpleNamespace(project=SimpleNamespace(warehouse=warehouse), run_id="r1")
    destination = FileDestination.model_validate({"version": 1, "type": "file", "path": "crm"})
    with pytest.raises(
        ConfigError,
        match="destination out: path: .* resolves outside .*exports "
        "\\(a symlink\\?\\); exports are written under <warehouse>/exports only",
    ):
        folder = _export_folder(ctx, "out", destination.path)
        _deliver_files(
            ctx, None, "out", folder, "csv", [{"segment_id": "vip", "segment_run_id": "s1"}], [{}], ["change_id"], None
        )
    assert list(outside.iterdir()) == []
    # a destination file named '...yaml' is destination '..': its default folder stays inside
    assert _export_folder(ctx, "..", None) == warehouse / "exports" / "_"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("file:///etc/passwd", "destination crm: url: resolves to scheme 'file'; only http and https are allowed"),
        ("ftp://files.example.com/x", "destination crm: url: resolves to scheme 'ftp'"),
        ("http://user:pw1234@hooks.example.com/x", "destination crm: url: resolves to a URL with user:password@"),
        ("http://hooks.example.com/x\r\nX-Evil: 1", "destination crm: url: resolves to a URL with spaces or control"),
    ],
)
def test_an_env_url_is_checked_when_resolved(monkeypatch, value, message):
    monkeypatch.setenv("HOOK_URL", value)
    with pytest.raises(ConfigError) as error:
        WebhookClient("crm", _settings("${HOOK_URL}"), run_id="r1")
    assert str(error.value).startswith(message)
    assert "pw1234" not in str(error.value)


def test_crlf_in_a_header_from_the_environment_is_a_config_error_not_a_crash(monkeypatch):
    monkeypatch.setenv("HOOK_KEY", "abc\r\nX-Injected: 1")
    with FaultServer() as server:
        with pytest.raises(
            ConfigError,
            match="destination crm: header X-Api-Key: value contains control characters "
            r"\(CR/LF\) after resolving its environment variables",
        ):
            WebhookClient("crm", _settings(server.url, headers={"X-Api-Key": "${HOOK_KEY}"}), run_id="r1")
        monkeypatch.setenv("HOOK_TOKEN", "t\nX-Injected: 1")
        with pytest.raises(ConfigError, match="destination crm: header Authorization: value contains control"):
            WebhookClient("crm", _settings(server.url, auth={"type": "bearer", "token_env": "HOOK_TOKEN"}), run_id="r1")
    assert server.received == []


def test_env_references_are_accepted_for_every_secret():
    model = DestinationFile.model_validate(
        {
            "version": 1,
            "type": "webhook",
            "url": "https://hooks.example.com/x?api_key=${CRM_KEY}&page=2",
            "headers": {"Authorization": "Bearer ${CRM_TOKEN}", "X-Api-Key": "${CRM_KEY}", "X-Trace": "lakecdp"},
        }
    )
    assert model.root.headers["Authorization"] == "Bearer ${CRM_TOKEN}"


def test_validate_destinations_finds_a_payload_template_error_before_any_run(tmp_path, capsys):
    from lakecdp.cli import main

    conf = tmp_path / "conf"
    (conf / "environments").mkdir(parents=True)
    (conf / "destinations").mkdir()
    (conf / "environments" / "local.yaml").write_text("version: 1\nname: local\n", encoding="utf-8")
    (conf / "destinations" / "crm.yaml").write_text(
        'version: 1\ntype: webhook\nurl: https://hooks.example.com/x\npayload_template: |\n  {"a": 1,\n'
        '   "items": {{ items | tojson }\n',
        encoding="utf-8",
    )
    assert main(["--conf", str(conf), "--env", "local", "validate-destinations"]) == 1
    assert capsys.readouterr().out == (
        f"ERROR {conf / 'destinations' / 'crm.yaml'}: webhook.payload_template: Value error, template syntax "
        "error at line 2: unexpected '}'\n"
    )
    shipped = Path(__file__).resolve().parents[1] / "conf"
    assert main(["--conf", str(shipped), "--env", "local", "validate-destinations"]) == 0
    assert capsys.readouterr().out == (
        "ok: demo_ads (hashed_audience)\nok: demo_export (file)\nok: demo_sms (sms)\nok: demo_webhook (webhook)\n"
    )
