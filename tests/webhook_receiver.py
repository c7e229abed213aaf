"""A tiny loopback webhook endpoint for the fakes' delivery tests."""

import http.server
import threading
import time


class Receiver:
    """Records every POST in ``got`` ({headers, body}) and answers the queued
    ``answers`` (statuses; a float is seconds to stall before a 200), then 200."""

    def __init__(self, answers=(), path='/webhooks'):
        self.answers = list(answers)
        self.got = []
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get('Content-Length', 0)))
                receiver.got.append({'headers': dict(self.headers), 'body': body})
                status = receiver.answers.pop(0) if receiver.answers else 200
                if isinstance(status, float):
                    time.sleep(status)
                    status = 200
                self.send_response(status)
                self.send_header('Content-Length', '0')
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
        self.url = f'http://127.0.0.1:{self.server.server_port}{path}'
        threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()
