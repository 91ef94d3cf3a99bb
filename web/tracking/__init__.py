"""The `web` process's front door: a thin ASGI app in front of the Flask app.

`app.SightlineAsgi` answers the hot paths itself — the pixel (`/o/<token>.gif`),
tracked clicks (`/c/<token>`) and the Live Feed's server-sent events
(`/feed/stream`) — and hands every other request to the Flask app through a WSGI
adapter (a2wsgi, in a thread pool). `serve` runs it under uvicorn (uvloop,
httptools), binding $PORT: one Heroku-friendly `web` process.

Must never: read the database on the pixel or click path, log a token, an
address or a user agent per hit, or set a cookie on a tracking response.
"""
