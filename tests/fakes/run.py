"""Serve one fake: ``PYTHONPATH=tests python tests/fakes/run.py comfyui`` (port 0,
loopback only)."""

from gevent import monkey

monkey.patch_all()

import importlib  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402

import gevent  # noqa: E402
from gevent.pywsgi import WSGIServer  # noqa: E402
from geventwebsocket.handler import WebSocketHandler  # noqa: E402


def main(name):
    module = importlib.import_module(f'fakes.{name}')
    server = WSGIServer(('127.0.0.1', 0), module.create_app(), handler_class=WebSocketHandler,
                        log=None)
    server.start()
    print(f'fake {name} listening on http://127.0.0.1:{server.server_port}', flush=True)
    gevent.signal_handler(signal.SIGTERM, server.stop)
    server.serve_forever()


if __name__ == '__main__':
    main(sys.argv[1])
