"""
The dashboard's web app: one page, its static files, and a JSON API.

The page holds no data: its script fetches the JSON routes and puts every
value in the document as text, so a name or a reason written by anyone cannot
become markup.  Everything the page loads comes from this app, which the
Content-Security-Policy header enforces.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

from klein import Klein
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from werkzeug.exceptions import HTTPException

from chat import logs
from chat.cluster.redisconn import RedisUnavailable
from chat.overview import Overview
from chat.reports import health_json, metrics_json, status_json
from chat.timeline import History, Sample

STATIC_TYPES = {
    "index.html": "text/html; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
    "charts.js": "text/javascript; charset=utf-8",
    "dashboard.js": "text/javascript; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
JSON_TYPE = "application/json; charset=utf-8"
POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)


def static_file(name: str) -> bytes:
    """
    One of the page's files, from the package.
    """
    return resources.files("chat").joinpath("static", name).read_bytes()


def _headers(request: IRequest, content_type: str) -> None:
    request.setHeader(b"content-type", content_type.encode("ascii"))
    request.setHeader(b"content-security-policy", POLICY.encode("ascii"))
    request.setHeader(b"x-content-type-options", b"nosniff")
    request.setHeader(b"referrer-policy", b"no-referrer")
    request.setHeader(b"cache-control", b"no-store")


def _json(request: IRequest, body: Any, code: int = 200) -> bytes:
    _headers(request, JSON_TYPE)
    request.setResponseCode(code)
    return json.dumps(body, allow_nan=False).encode("utf-8") + b"\n"


class Dashboard:
    """
    The routes, over an L{Overview} of the system and its L{History}.
    """

    app = Klein()
    log = Logger(observer=logs.observer)

    def __init__(
        self, clock: IReactorTime, overview: Overview, history: History
    ) -> None:
        self.clock = clock
        self.overview = overview
        self.history = history
        self.files = {name: static_file(name) for name in STATIC_TYPES}

    async def _samples(self) -> list[Sample]:
        try:
            return await self.history.read(self.clock.seconds())
        except RedisUnavailable:
            return []

    @app.route("/", methods=["GET"])
    def page(self, request: IRequest) -> bytes:
        return self.static(request, "index.html")

    @app.route("/static/<string:name>", methods=["GET"])
    def static(self, request: IRequest, name: str) -> bytes:
        if name not in self.files:
            request.setResponseCode(404)
            _headers(request, "text/plain; charset=utf-8")
            return b"not found\n"
        _headers(request, STATIC_TYPES[name])
        return self.files[name]

    @app.route("/api/status", methods=["GET"])
    async def status(self, request: IRequest) -> bytes:
        snapshot = await self.overview.snapshot()
        return _json(request, status_json(snapshot, await self._samples()))

    @app.route("/api/health", methods=["GET"])
    async def health(self, request: IRequest) -> bytes:
        report = health_json(await self.overview.snapshot())
        return _json(request, report, 503 if report["status"] == "unhealthy" else 200)

    @app.route("/api/metrics", methods=["GET"])
    async def metrics(self, request: IRequest) -> bytes:
        now = self.clock.seconds()
        samples = await self._samples()
        try:
            scaler = await self.overview.scaler()
        except RedisUnavailable:
            decisions = None
        else:
            decisions = scaler.decisions
        body = metrics_json(
            samples, decisions, self.history.interval, self.history.horizon, now
        )
        return _json(request, body)

    @app.handle_errors(Exception)
    def failed(self, request: IRequest, failure: Failure) -> bytes:
        if isinstance(failure.value, HTTPException):
            code = failure.value.code or 500
            return _json(request, {"error": failure.value.name.lower()}, code)
        self.log.failure("dashboard request {uri} failed", failure, uri=request.uri)
        return _json(request, {"error": "internal"}, 500)
