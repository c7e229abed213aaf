"""What every fake shares: its JSON replies and the /_fake/ control routes."""

import errno
import json

import bottle


class ApiError(Exception):
    """An error answer: HTTP status, JSON body and extra headers."""

    def __init__(self, status, body, headers=None):
        super().__init__(body)
        self.status = status
        self.body = body
        self.headers = headers or {}


def droppable(app):
    """Wrap a WSGI app so a handler can close the connection without any answer.

    A handler sets ``environ['fake.drop']``; raising ECONNRESET here (outside
    Bottle, which would turn it into a 500) makes gevent.pywsgi close the socket
    silently before the first byte of the response is written.
    """
    def wsgi(environ, start_response):
        result = app(environ, start_response)
        if environ.get('fake.drop'):
            raise ConnectionResetError(errno.ECONNRESET, 'fake dropped the connection')
        return result
    wsgi.bottle = app
    return wsgi


def reply(data, status=200, headers=None):
    return bottle.HTTPResponse(json.dumps(data), status,
                               {'Content-Type': 'application/json', **(headers or {})})


def control_routes(app, fake):
    """/_fake/config, /requests, /reset and /state for ``fake`` (which has
    ``configure``, ``requests``, ``reset``, ``state`` and ``scenario``)."""
    @app.post('/_fake/config')
    def config():
        try:
            fake.configure(json.loads(bottle.request.body.read() or b'{}'))
        except ValueError as exc:
            return reply({'error': str(exc)}, 400)
        return reply(fake.scenario)

    @app.get('/_fake/requests')
    def recorded():
        return reply(fake.requests)

    @app.post('/_fake/reset')
    def reset():
        fake.reset()
        return reply({})

    @app.get('/_fake/state')
    def state():
        return reply(fake.state())
