"""ApiClient's retries in place, against a small real HTTP server: the
RetryPolicy decides how often and how long, and nothing waits after the last try."""

import http.server
import threading

import pytest
import requests

from adapters.api import ApiClient, RetryPolicy, UnclearAnswer
from adapters.base import AdapterError


class Answers(http.server.BaseHTTPRequestHandler):
    """Answers each request with the next (status, headers) of the server's script."""

    def do_POST(self):
        self.server.seen += 1
        status, headers = self.server.script.pop(0) if self.server.script else (200, {})
        body = b'{"ok": true}' if status == 200 else b'{"error": "no"}'
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    made = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Answers)
    made.script, made.seen = [], 0
    thread = threading.Thread(target=made.serve_forever, daemon=True)
    thread.start()
    yield made
    made.shutdown()
    made.server_close()


def client(server, tries=4, waits=None):
    policy = RetryPolicy(tries=tries, first_wait=0.5, longest_wait=60,
                         sleep=(waits if waits is not None else []).append)
    return ApiClient(f'http://127.0.0.1:{server.server_port}', requests.Session(), policy)


def test_429s_are_waited_out_as_the_policy_says_and_not_after_the_last(server):
    waits = []
    server.script = [(429, {'Retry-After': '7'})] * 10
    with pytest.raises(AdapterError, match='still answered 429 after 4 tries') as raised:
        client(server, waits=waits).call('POST', '/x')
    assert server.seen == 4 and waits == [7.0, 7.0, 7.0]  # three waits between four sends
    assert raised.value.retryable


def test_a_long_retry_after_is_capped_and_a_5xx_backs_off(server):
    waits = []
    server.script = [(429, {'Retry-After': '3600'}), (503, {}), (503, {})]
    assert client(server, waits=waits).call('POST', '/x') == {'ok': True}
    assert waits[0] == 60 and 0.8 <= waits[1] <= 1.2 and 1.6 <= waits[2] <= 2.4  # tries 2, 3
    assert server.seen == 4


def test_a_5xx_on_the_last_try_is_the_platforms_refusal(server):
    waits = []
    server.script = [(502, {})] * 3
    with pytest.raises(AdapterError, match=r'refused POST /x \(502\)') as raised:
        client(server, tries=3, waits=waits).call('POST', '/x')
    assert server.seen == 3 and len(waits) == 2 and raised.value.retryable


def test_a_create_is_not_sent_again_after_a_5xx(server):
    waits = []
    server.script = [(500, {})]
    with pytest.raises(UnclearAnswer):
        client(server, waits=waits).call('POST', '/x', once=True)
    assert server.seen == 1 and waits == []


def test_a_client_cannot_be_built_without_its_session():
    with pytest.raises(TypeError, match='needs an HTTP session'):
        ApiClient('http://127.0.0.1:9', None, RetryPolicy())
