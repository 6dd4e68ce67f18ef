"""The labeling page over HTTP: thin Flask routes that call `LabelingService` (needs flask)."""

from __future__ import annotations

import importlib.resources
import os
from collections.abc import Iterable

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException

from hybrid_jax import io
from hybrid_jax.labeling import guard
from hybrid_jax.labeling.errors import ApiError
from hybrid_jax.labeling.pairs import BINARY, Source
from hybrid_jax.labeling.service import DISPLAY_SIZE, LabelingService

PAGE_FILE = "page.html"


def page_html() -> str:
    """The page (HTML + JS, keyboard driven), shipped as package data next to this module."""
    resource = importlib.resources.files("hybrid_jax.labeling").joinpath(PAGE_FILE)
    try:
        return resource.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"{resource} is missing from the installed hybrid_jax package; "
                                'reinstall it (pip install -e ".[label]")') from None


def create_app(workdir: str | os.PathLike, seed: int = 0, display_size: int = DISPLAY_SIZE, *,
               allowed_hosts: Iterable[str] = (), source: Source = BINARY) -> Flask:
    """The labeling app for `workdir`; `seed` (the run seed) fixes the random left/right order, `source` what is
    compared (`BINARY`: A vs B; `OPTIONS`: the allocation study's reference vs each other option).

    Only same-origin requests are served (see `hybrid_jax.labeling.guard`): the Host must be the
    address the server listens on (or a loopback spelling of it), plus any `allowed_hosts` given as
    "name" or "name:port".
    """
    service = LabelingService(workdir, run_seed=seed, display_size=display_size, source=source)
    allowed = guard.parse_allowed(allowed_hosts)
    page = page_html()
    app = Flask(__name__)
    app.config.update(WORKDIR=str(service.workdir), RUN_SEED=service.run_seed)
    app.extensions["labeling"] = service
    app.json.sort_keys = False
    _register_errors(app)
    app.before_request(lambda: _check_request(allowed))
    _register_routes(app, service, page)
    return app


def _check_request(allowed: frozenset) -> None:
    """Refuse foreign Host / Origin (403) and non-JSON state changes (415) before any route runs."""
    env = request.environ
    refused = guard.refusal(
        method=request.method, host=request.headers.get("Host"), origin=request.headers.get("Origin"),
        content_type=request.mimetype, scheme=request.scheme, allowed=allowed,
        served=guard.served_address(env.get("SERVER_NAME", ""), env.get("SERVER_PORT", ""), request.scheme),
        # a POST to no route gets its 404/405, not 415
        changes_state=request.method not in guard.SAFE_METHODS and request.url_rule is not None)
    if refused is not None:
        raise refused


def _json_body(optional: bool = False) -> dict:
    """The request's JSON object (the guard has checked the Content-Type); {} for an empty optional body."""
    if optional and not request.get_data(cache=True).strip():
        return {}
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        raise ApiError(400, "the request body must be a JSON object, e.g. "
                            '{"seed": 3, "answer": "left"}')
    return data


def _register_errors(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api_error(e: ApiError):
        return jsonify(error=e.message, status=e.status), e.status

    @app.errorhandler(HTTPException)
    def _http_error(e: HTTPException):
        return jsonify(error=f"{e.name}: {e.description}", status=e.code), e.code

    @app.errorhandler(io.WriteError)
    def _write_error(e: io.WriteError):
        return jsonify(error=str(e), status=507), 507


def _register_routes(app: Flask, service: LabelingService, page: str) -> None:
    @app.get("/")
    def index():
        resp = Response(page, mimetype="text/html")
        # no framing by other sites (they could trick key presses into it)
        resp.headers["X-Frame-Options"] = "DENY"
        resp.headers["Content-Security-Policy"] = "frame-ancestors 'none'"
        return resp

    @app.get("/api/state")
    def api_state():
        return jsonify(service.state())

    @app.get("/img/<seed_text>/<side>.png")
    def image(seed_text: str, side: str):
        resp = Response(service.image_png(seed_text, side, request.args.get("option")), mimetype="image/png")
        resp.headers["Cache-Control"] = "no-store"
        return resp

    @app.post("/api/label")
    def api_label():
        return jsonify(service.label(_json_body()))

    @app.post("/api/undo")
    def api_undo():
        return jsonify(service.undo(_json_body(optional=True)))

    @app.post("/api/skip")
    def api_skip():
        return jsonify(service.skip(_json_body()))
