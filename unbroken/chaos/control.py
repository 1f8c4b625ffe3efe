"""An HTTP control API shaped exactly like Toxiproxy's, so its clients drive our proxies.

Routes, status codes, JSON keys and attribute units follow Toxiproxy (``api.go``): ``/reset``,
``/proxies``, ``/populate``, ``/proxies/{proxy}``, ``/proxies/{proxy}/toxics``,
``/proxies/{proxy}/toxics/{toxic}``, ``/version``; default port 8474. Errors are
``{"error": "...", "status": N}`` as Toxiproxy writes them. Updates accept POST and PATCH.

::

    registry = ProxyRegistry()
    async with ControlServer(registry, port=8474):
        ...  # curl -X POST localhost:8474/proxies -d '{"name":"ws","upstream":"127.0.0.1:8000"}'
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import socket
from collections.abc import Generator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Final

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import ApiError, ConfigError, NameNotFound, NameTaken
from ..version import __version__
from .proxy import FaultProxy, parse_address
from .toxics import DIRECTIONS, TOXIC_TYPES

logger = logging.getLogger(__name__)

DEFAULT_API_PORT: Final = 8474
API_VERSION: Final = f"{__version__}+unbroken"


BAD_REQUEST_BODY: Final = "bad request body"
MISSING_FIELD: Final = "missing required field"
INVALID_STREAM: Final = "stream was invalid, can be either upstream or downstream"


class ProxyRegistry:
    """Named :class:`FaultProxy` objects: what the Toxiproxy server calls its collection."""

    def __init__(self, *, fault_log: str | Path | None = None, seed: int | None = None) -> None:
        self.fault_log = fault_log
        self.seed = seed
        self._proxies: dict[str, FaultProxy] = {}

    @property
    def proxies(self) -> dict[str, FaultProxy]:
        """Proxies by name."""
        return dict(self._proxies)

    def get(self, name: str) -> FaultProxy:
        """The proxy called ``name``; :class:`NameNotFound` otherwise."""
        try:
            return self._proxies[name]
        except KeyError:
            raise NameNotFound("proxy not found") from None

    def add(self, proxy: FaultProxy) -> FaultProxy:
        """Register an already created proxy."""
        if proxy.name in self._proxies:
            raise NameTaken("proxy already exists")
        self._proxies[proxy.name] = proxy
        return proxy

    async def create(
        self, name: str, upstream: str, listen: str = "127.0.0.1:0", enabled: bool = True
    ) -> FaultProxy:
        """Create, register and start a proxy (listening unless ``enabled`` is false)."""
        if name in self._proxies:
            raise NameTaken("proxy already exists")
        proxy = FaultProxy(
            upstream=upstream,
            listen=listen,
            name=name,
            fault_log=self.fault_log,
            seed=self.seed,
            enabled=enabled,
        )
        await proxy.start()
        self._proxies[name] = proxy
        return proxy

    async def remove(self, name: str) -> None:
        """Stop and forget a proxy."""
        proxy = self.get(name)
        del self._proxies[name]
        await proxy.stop()

    async def reset(self) -> None:
        """Enable every proxy and remove every toxic."""
        for proxy in list(self._proxies.values()):
            await proxy.reset()

    async def close(self) -> None:
        """Stop every proxy."""
        for name in list(self._proxies):
            await self.remove(name)


# ---------------------------------------------------------------------- JSON helpers
def _go_number(value: float) -> int | float:
    """Go's encoder writes a whole float32 as an integer (``1``, not ``1.0``)."""
    return int(value) if float(value).is_integer() else value


def _toxic_json(proxy: FaultProxy, name: str) -> dict[str, object]:
    installed = proxy.get_toxic(name)
    if installed is None:
        raise ApiError("toxic not found", 404)
    out = installed.to_json()
    out["toxicity"] = _go_number(installed.toxicity)
    return out


def _proxy_json(proxy: FaultProxy) -> dict[str, object]:
    out = proxy.to_json()
    out["toxics"] = [_toxic_json(proxy, t.name) for t in proxy.toxics]
    return out


def _json(data: object, status: int = 200) -> Response:
    body = json.dumps(data, separators=(",", ":"))
    return Response(body, status_code=status, media_type="application/json")


def _error(message: str, status: int) -> Response:
    """Go's ``http.Error``: text/plain content type, JSON body, trailing newline."""
    body = json.dumps({"error": message, "status": status}, separators=(",", ":")) + "\n"
    return Response(
        body,
        status_code=status,
        headers={"Content-Type": "text/plain; charset=utf-8", "X-Content-Type-Options": "nosniff"},
    )


async def _body(request: Request) -> Any:
    raw = await request.body()
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(f"{BAD_REQUEST_BODY}: {exc}", 400) from None


def _object(data: Any) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ApiError(f"{BAD_REQUEST_BODY}: expected a JSON object", 400)
    return data


def _string(data: Mapping[str, Any], key: str, default: str = "") -> str:
    value = data.get(key, default)
    if value is None:
        return default
    if not isinstance(value, str):
        raise ApiError(f"{BAD_REQUEST_BODY}: {key} must be a string", 400)
    return value


def _bool(data: Mapping[str, Any], key: str, default: bool) -> bool:
    value = data.get(key, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ApiError(f"{BAD_REQUEST_BODY}: {key} must be a boolean", 400)
    return value


def _number(data: Mapping[str, Any], key: str, default: float) -> float:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ApiError(f"{BAD_REQUEST_BODY}: {key} must be a number", 400)
    return float(value)


def _attributes(data: Mapping[str, Any]) -> dict[str, object]:
    value = data.get("attributes", {})
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ApiError(f"{BAD_REQUEST_BODY}: attributes must be an object", 400)
    return value


def _address(text: str, field: str) -> str:
    try:
        parse_address(text)
    except ConfigError as exc:
        raise ApiError(f"{BAD_REQUEST_BODY}: {field}: {exc}", 400) from None
    return text


# ---------------------------------------------------------------------- handlers
class _Handlers:
    def __init__(self, registry: ProxyRegistry) -> None:
        self.registry = registry

    def _proxy(self, request: Request) -> FaultProxy:
        try:
            return self.registry.get(request.path_params["proxy"])
        except NameNotFound:
            raise ApiError("proxy not found", 404) from None

    async def reset(self, request: Request) -> Response:
        await self.registry.reset()
        return Response(status_code=204)

    async def version(self, request: Request) -> Response:
        body = json.dumps({"version": API_VERSION}) + "\n"
        return Response(body, media_type="application/json;charset=utf-8")

    async def proxy_index(self, request: Request) -> Response:
        return _json({name: _proxy_json(p) for name, p in self.registry.proxies.items()})

    async def _create(self, data: Mapping[str, Any], where: str = "") -> FaultProxy:
        name = _string(data, "name")
        upstream = _string(data, "upstream")
        if not name:
            raise ApiError(f"{MISSING_FIELD}: name{where}", 400)
        if not upstream:
            raise ApiError(f"{MISSING_FIELD}: upstream{where}", 400)
        listen = _address(_string(data, "listen") or "127.0.0.1:0", "listen")
        _address(upstream, "upstream")
        enabled = _bool(data, "enabled", True)
        try:
            return await self.registry.create(name, upstream, listen, enabled)
        except NameTaken:
            raise ApiError("proxy already exists", 409) from None
        except OSError as exc:
            raise ApiError(str(exc), 500) from None

    async def proxy_create(self, request: Request) -> Response:
        proxy = await self._create(_object(await _body(request)))
        return _json(_proxy_json(proxy), 201)

    async def populate(self, request: Request) -> Response:
        try:
            items = await _body(request)
            if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
                raise ApiError(f"{BAD_REQUEST_BODY}: expected an array of proxies", 400)
        except ApiError as exc:
            return _json({"error": exc.message, "status": exc.status, "proxies": None}, exc.status)
        for index, item in enumerate(items, start=1):
            for key in ("name", "upstream"):
                if not item.get(key):
                    message = f"{MISSING_FIELD}: {key} at proxy {index}"
                    return _json({"error": message, "status": 400, "proxies": None}, 400)
        done: list[FaultProxy] = []
        try:
            for item in items:
                name = _string(item, "name")
                existing = self.registry.proxies.get(name)
                if existing is not None:
                    listen = _string(item, "listen") or "127.0.0.1:0"
                    same = parse_address(listen) == parse_address(existing.listen) and (
                        parse_address(_string(item, "upstream")) == existing.upstream_address
                    )
                    if same:
                        done.append(existing)
                        continue
                    await self.registry.remove(name)
                done.append(await self._create(item))
        except ApiError as exc:
            body = {"error": exc.message, "status": exc.status, "proxies": _many(done)}
            return _json(body, exc.status)
        return _json({"proxies": _many(done)}, 201)

    async def proxy_show(self, request: Request) -> Response:
        return _json(_proxy_json(self._proxy(request)))

    async def proxy_update(self, request: Request) -> Response:
        if request.method == "POST":
            logger.debug("ProxyUpdate: HTTP method POST is deprecated. Use HTTP PATCH instead.")
        proxy = self._proxy(request)
        data = _object(await _body(request))
        listen = _address(_string(data, "listen", proxy.listen) or proxy.listen, "listen")
        upstream = _address(_string(data, "upstream", proxy.upstream) or proxy.upstream, "upstream")
        enabled = _bool(data, "enabled", proxy.enabled)
        try:
            if parse_address(listen) != parse_address(proxy.listen) or (
                parse_address(upstream) != proxy.upstream_address
            ):
                await proxy.reconfigure(listen=listen, upstream=upstream)
            if enabled and not proxy.enabled:
                await proxy.enable()
            elif not enabled and proxy.enabled:
                await proxy.disable()
        except OSError as exc:
            raise ApiError(str(exc), 500) from None
        return _json(_proxy_json(proxy))

    async def proxy_delete(self, request: Request) -> Response:
        proxy = self._proxy(request)
        await self.registry.remove(proxy.name)
        return Response(status_code=204)

    async def toxic_index(self, request: Request) -> Response:
        proxy = self._proxy(request)
        return _json([_toxic_json(proxy, t.name) for t in proxy.toxics])

    async def toxic_create(self, request: Request) -> Response:
        proxy = self._proxy(request)
        data = _object(await _body(request))
        stream = _string(data, "stream", "downstream") or "downstream"
        type_name = _string(data, "type")
        name = _string(data, "name")
        toxicity = _number(data, "toxicity", 1.0)
        attributes = _attributes(data)
        if stream not in DIRECTIONS:
            raise ApiError(INVALID_STREAM, 400)
        if type_name not in TOXIC_TYPES:
            raise ApiError("invalid toxic type", 400)
        name = name or f"{type_name}_{stream}"
        if proxy.get_toxic(name) is not None:
            raise ApiError("toxic already exists", 409)
        try:
            toxic = TOXIC_TYPES[type_name].from_attributes(attributes)
            proxy.add_toxic(toxic, stream=stream, toxicity=toxicity, name=name)
        except (ValueError, ConfigError) as exc:
            raise ApiError(f"{BAD_REQUEST_BODY}: {exc}", 400) from None
        return _json(_toxic_json(proxy, name))

    async def toxic_show(self, request: Request) -> Response:
        proxy = self._proxy(request)
        return _json(_toxic_json(proxy, request.path_params["toxic"]))

    async def toxic_update(self, request: Request) -> Response:
        proxy = self._proxy(request)
        name = request.path_params["toxic"]
        installed = proxy.get_toxic(name)
        if installed is None:
            raise ApiError("toxic not found", 404)
        data = _object(await _body(request))
        toxicity = _number(data, "toxicity", installed.toxicity)
        try:
            proxy.update_toxic(name, attributes=_attributes(data), toxicity=toxicity)
        except (ValueError, ConfigError) as exc:
            raise ApiError(f"{BAD_REQUEST_BODY}: {exc}", 400) from None
        return _json(_toxic_json(proxy, name))

    async def toxic_delete(self, request: Request) -> Response:
        proxy = self._proxy(request)
        try:
            proxy.remove_toxic(request.path_params["toxic"])
        except NameNotFound:
            raise ApiError("toxic not found", 404) from None
        return Response(status_code=204)


def _many(proxies: list[FaultProxy]) -> list[dict[str, object]]:
    return [_proxy_json(p) for p in proxies]


class _ToxiproxyMiddleware:
    """Request id header on every answer; 403 for browsers, as Toxiproxy."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = secrets.token_hex(10)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((b"x-toxiproxy-request-id", request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        user_agent = ""
        for key, value in scope.get("headers", []):
            if key == b"user-agent":
                user_agent = value.decode("latin-1")
        if user_agent.startswith("Mozilla/"):
            response = Response(
                "User agent not allowed\n",
                status_code=403,
                headers={"Content-Type": "text/plain; charset=utf-8"},
            )
            await response(scope, receive, send_with_id)
            return
        await self.app(scope, receive, send_with_id)


def control_app(registry: ProxyRegistry) -> ASGIApp:
    """The Toxiproxy-compatible ASGI app over ``registry``."""
    h = _Handlers(registry)
    routes = [
        Route("/reset", h.reset, methods=["POST"]),
        Route("/version", h.version, methods=["GET"]),
        Route("/populate", h.populate, methods=["POST"]),
        Route("/proxies", h.proxy_index, methods=["GET"]),
        Route("/proxies", h.proxy_create, methods=["POST"]),
        Route("/proxies/{proxy}", h.proxy_show, methods=["GET"]),
        Route("/proxies/{proxy}", h.proxy_update, methods=["POST", "PATCH"]),
        Route("/proxies/{proxy}", h.proxy_delete, methods=["DELETE"]),
        Route("/proxies/{proxy}/toxics", h.toxic_index, methods=["GET"]),
        Route("/proxies/{proxy}/toxics", h.toxic_create, methods=["POST"]),
        Route("/proxies/{proxy}/toxics/{toxic}", h.toxic_show, methods=["GET"]),
        Route("/proxies/{proxy}/toxics/{toxic}", h.toxic_update, methods=["POST", "PATCH"]),
        Route("/proxies/{proxy}/toxics/{toxic}", h.toxic_delete, methods=["DELETE"]),
    ]

    async def api_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        return _error(exc.message, exc.status)

    app = Starlette(routes=routes, exception_handlers={ApiError: api_error})
    return _ToxiproxyMiddleware(app)


class _EmbeddedServer(uvicorn.Server):
    """uvicorn without its signal handlers: the embedding program owns signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class ControlServer:
    """Serves :func:`control_app` with uvicorn inside the running event loop.

    ``port=0`` picks a free port (see :attr:`port`); the default is Toxiproxy's 8474.
    """

    def __init__(
        self, registry: ProxyRegistry, host: str = "127.0.0.1", port: int = DEFAULT_API_PORT
    ) -> None:
        self.registry = registry
        self.host = host
        self._requested_port = port
        self._socket: socket.socket | None = None
        self._server: _EmbeddedServer | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def port(self) -> int:
        """The bound port."""
        if self._socket is None:
            return self._requested_port
        return int(self._socket.getsockname()[1])

    @property
    def url(self) -> str:
        """``http://host:port``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def start(self) -> None:
        """Bind and start serving (requests queue in the backlog until uvicorn is up)."""
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        self._socket = socket.create_server((self.host, self._requested_port), family=family)
        config = uvicorn.Config(
            control_app(self.registry),
            log_config=None,
            access_log=False,
            lifespan="off",
            ws="none",
        )
        self._server = _EmbeddedServer(config)
        self._task = asyncio.get_running_loop().create_task(
            self._server.serve(sockets=[self._socket])
        )
        logger.debug("Toxiproxy-compatible control API on %s", self.url)

    async def stop(self) -> None:
        """Stop serving (the proxies keep running; close the registry for that)."""
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await self._task
        if self._socket is not None:
            self._socket.close()
        self._server = None
        self._task = None

    async def wait(self) -> None:
        """Return when the server stops."""
        if self._task is not None:
            await asyncio.shield(self._task)

    async def __aenter__(self) -> ControlServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
