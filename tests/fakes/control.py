"""What every fake shares: its JSON replies and the /_fake/ control routes."""

import json

import bottle


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
