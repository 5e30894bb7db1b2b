"""An in-memory Momento cache service on loopback gRPC, for the real `momento` SDK to talk to.

Built on the SDK's own generated stubs (`momento_wire_types`): the servicer base classes fix the
method names and message types, so a request the SDK sends and the answer it parses are the wire
protocol, not a mock of the client. Served without TLS on 127.0.0.1:<free port>; the SDK connects
through `CredentialProvider.for_momento_local(host, port)`, which makes it open an insecure
channel (its own path for Momento Local), so no certificate and no patching are needed:

    with MomentoStandIn(caches=("gateway",)) as standin:
        client = standin.cache_client()
        client.set("gateway", "k", "v")

Served: Get, Set, SetIfNotExists, Delete, Increment, ItemGetTtl, DictionaryGet/Fetch/Set/
Increment/Delete, and control-plane CreateCache/DeleteCache/FlushCache. Anything else answers
UNIMPLEMENTED, as the base class does. Semantics follow Momento's documented behaviour: TTLs in
milliseconds, `Increment` works on ASCII integers, a collection's TTL is set when it is created and
refreshed on writes that ask for it (`refresh_ttl`); an unknown cache is NOT_FOUND, a wrong item
type or a non-integer increment FAILED_PRECONDITION. Where the documentation is silent, `Increment`
here (re)sets the item's TTL on every call, like `Set`; the adapters are correct either way.

The stand-in's clock is `time.monotonic` plus an offset that `advance()` moves, so a test can
expire items without sleeping (or use short real TTLs). `calls` counts RPCs by method name.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import grpc
from momento_wire_types import cacheclient_pb2 as pb
from momento_wire_types import cacheclient_pb2_grpc as pb_grpc
from momento_wire_types import controlclient_pb2 as control_pb
from momento_wire_types import controlclient_pb2_grpc as control_grpc

from tests.support.servers import Lifecycle

HOST = "127.0.0.1"
_Response = TypeVar("_Response")


@dataclass
class _Item:
    value: bytes | dict[bytes, bytes]
    expires_at: float


class _Abort(Exception):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


class _Store:
    """Caches -> keys -> items, one lock; expired items are dropped when touched."""

    def __init__(self, caches: tuple[str, ...], clock: Callable[[], float]) -> None:
        self.lock = threading.Lock()
        self.caches: dict[str, dict[bytes, _Item]] = {name: {} for name in caches}
        self.clock = clock

    def cache(self, context: grpc.ServicerContext) -> dict[bytes, _Item]:
        name = dict(context.invocation_metadata()).get("cache", "")
        cache = self.caches.get(str(name))
        if cache is None:
            raise _Abort(grpc.StatusCode.NOT_FOUND, f"Cache not found: {name}")
        return cache

    def live(self, cache: dict[bytes, _Item], key: bytes) -> _Item | None:
        item = cache.get(key)
        if item is not None and item.expires_at <= self.clock():
            del cache[key]
            return None
        return item

    def scalar(self, cache: dict[bytes, _Item], key: bytes) -> _Item | None:
        item = self.live(cache, key)
        if item is not None and not isinstance(item.value, bytes):
            raise _Abort(grpc.StatusCode.FAILED_PRECONDITION, "the item is not a scalar")
        return item

    def dictionary(self, cache: dict[bytes, _Item], name: bytes) -> _Item | None:
        item = self.live(cache, name)
        if item is not None and not isinstance(item.value, dict):
            raise _Abort(grpc.StatusCode.FAILED_PRECONDITION, "the item is not a dictionary")
        return item

    def expiry(self, ttl_ms: int) -> float:
        if ttl_ms <= 0:
            raise _Abort(grpc.StatusCode.INVALID_ARGUMENT, "ttl must be positive")
        return self.clock() + ttl_ms / 1000.0

    def writable_dictionary(
        self, cache: dict[bytes, _Item], name: bytes, ttl_ms: int, refresh: bool
    ) -> dict[bytes, bytes]:
        item = self.dictionary(cache, name)
        if item is None:
            item = cache[name] = _Item({}, self.expiry(ttl_ms))
        elif refresh:
            item.expires_at = self.expiry(ttl_ms)
        assert isinstance(item.value, dict)
        return item.value


def _as_int(raw: bytes) -> int:
    try:
        return int(raw.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise _Abort(grpc.StatusCode.FAILED_PRECONDITION, "the value is not an integer") from None


class _CacheService(pb_grpc.ScsServicer):  # the generated base: method names are the RPCs
    def __init__(self, store: _Store, calls: Counter[str]) -> None:
        self._store = store
        self._calls = calls

    def _serve(
        self, name: str, context: grpc.ServicerContext, handler: Callable[[dict[bytes, _Item]], _Response]
    ) -> _Response:
        with self._store.lock:
            self._calls[name] += 1
            try:
                return handler(self._store.cache(context))
            except _Abort as abort:
                error = abort
        context.abort(error.code, error.details)
        raise AssertionError("unreachable: context.abort raises")

    def Get(self, request: Any, context: grpc.ServicerContext) -> Any:
        def handle(cache: dict[bytes, _Item]) -> Any:
            item = self._store.scalar(cache, request.cache_key)
            if item is None:
                return pb._GetResponse(result=pb.Miss)
            assert isinstance(item.value, bytes)
            return pb._GetResponse(result=pb.Hit, cache_body=item.value)

        return self._serve("Get", context, handle)

    def Set(self, request: Any, context: grpc.ServicerContext) -> Any:
        def handle(cache: dict[bytes, _Item]) -> Any:
            cache[request.cache_key] = _Item(request.cache_body, self._store.expiry(request.ttl_milliseconds))
            return pb._SetResponse(result=pb.Ok)

        return self._serve("Set", context, handle)

    def SetIfNotExists(self, request: Any, context: grpc.ServicerContext) -> Any:
        def handle(cache: dict[bytes, _Item]) -> Any:
            if self._store.live(cache, request.cache_key) is not None:
                return pb._SetIfNotExistsResponse(not_stored=pb._SetIfNotExistsResponse._NotStored())
            cache[request.cache_key] = _Item(request.cache_body, self._store.expiry(request.ttl_milliseconds))
            return pb._SetIfNotExistsResponse(stored=pb._SetIfNotExistsResponse._Stored())

        return self._serve("SetIfNotExists", context, handle)

    def Delete(self, request: Any, context: grpc.ServicerContext) -> Any:
        def handle(cache: dict[bytes, _Item]) -> Any:
            cache.pop(request.cache_key, None)
            return pb._DeleteResponse()

        return self._serve("Delete", context, handle)

    def Increment(self, request: Any, context: grpc.ServicerContext) -> Any:
        def handle(cache: dict[bytes, _Item]) -> Any:
            item = self._store.scalar(cache, request.cache_key)
            current = 0 if item is None else _as_int(item.value)  # type: ignore[arg-type]
            value = current + request.amount
            cache[request.cache_key] = _Item(str(value).encode(), self._store.expiry(request.ttl_milliseconds))
            return pb._IncrementResponse(value=value)

        return self._serve("Increment", context, handle)

    def ItemGetTtl(self, request: Any, context: grpc.ServicerContext) -> Any:
        def handle(cache: dict[bytes, _Item]) -> Any:
            item = self._store.live(cache, request.cache_key)
            if item is None:
                return pb._ItemGetTtlResponse(missing=pb._ItemGetTtlResponse._Missing())
            remaining = round((item.expires_at - self._store.clock()) * 1000)
            return pb._ItemGetTtlResponse(found=pb._ItemGetTtlResponse._Found(remaining_ttl_millis=remaining))

        return self._serve("ItemGetTtl", context, handle)

    def DictionaryGet(self, request: Any, context: grpc.ServicerContext) -> Any:
        def handle(cache: dict[bytes, _Item]) -> Any:
            item = self._store.dictionary(cache, request.dictionary_name)
            if item is None:
                return pb._DictionaryGetResponse(missing=pb._DictionaryGetResponse._Missing())
            assert isinstance(item.value, dict)
            part = pb._DictionaryGetResponse._DictionaryGetResponsePart
            parts = [
                part(result=pb.Hit, cache_body=item.value[field]) if field in item.value else part(result=pb.Miss)
                for field in request.fields
            ]
            return pb._DictionaryGetResponse(found=pb._DictionaryGetResponse._Found(items=parts))

        return self._serve("DictionaryGet", context, handle)

    def DictionaryFetch(self, request: Any, context: grpc.ServicerContext) -> Any:
        def handle(cache: dict[bytes, _Item]) -> Any:
            item = self._store.dictionary(cache, request.dictionary_name)
            if item is None:
                return pb._DictionaryFetchResponse(missing=pb._DictionaryFetchResponse._Missing())
            assert isinstance(item.value, dict)
            pairs = [pb._DictionaryFieldValuePair(field=f, value=v) for f, v in item.value.items()]
            return pb._DictionaryFetchResponse(found=pb._DictionaryFetchResponse._Found(items=pairs))

        return self._serve("DictionaryFetch", context, handle)

    def DictionarySet(self, request: Any, context: grpc.ServicerContext) -> Any:
        def handle(cache: dict[bytes, _Item]) -> Any:
            fields = self._store.writable_dictionary(
                cache, request.dictionary_name, request.ttl_milliseconds, request.refresh_ttl
            )
            for pair in request.items:
                fields[pair.field] = pair.value
            return pb._DictionarySetResponse()

        return self._serve("DictionarySet", context, handle)

    def DictionaryIncrement(self, request: Any, context: grpc.ServicerContext) -> Any:
        def handle(cache: dict[bytes, _Item]) -> Any:
            fields = self._store.writable_dictionary(
                cache, request.dictionary_name, request.ttl_milliseconds, request.refresh_ttl
            )
            value = _as_int(fields.get(request.field, b"0")) + request.amount
            fields[request.field] = str(value).encode()
            return pb._DictionaryIncrementResponse(value=value)

        return self._serve("DictionaryIncrement", context, handle)

    def DictionaryDelete(self, request: Any, context: grpc.ServicerContext) -> Any:
        def handle(cache: dict[bytes, _Item]) -> Any:
            item = self._store.dictionary(cache, request.dictionary_name)
            if item is not None:
                assert isinstance(item.value, dict)
                if request.WhichOneof("delete") == "all":
                    del cache[request.dictionary_name]
                else:
                    for field in request.some.fields:
                        item.value.pop(field, None)
                    if not item.value:
                        del cache[request.dictionary_name]
            return pb._DictionaryDeleteResponse()

        return self._serve("DictionaryDelete", context, handle)


class _ControlService(control_grpc.ScsControlServicer):
    def __init__(self, store: _Store, calls: Counter[str]) -> None:
        self._store = store
        self._calls = calls

    def CreateCache(self, request: Any, context: grpc.ServicerContext) -> Any:
        with self._store.lock:
            self._calls["CreateCache"] += 1
            exists = request.cache_name in self._store.caches
            self._store.caches.setdefault(request.cache_name, {})
        if exists:
            context.abort(grpc.StatusCode.ALREADY_EXISTS, f"Cache already exists: {request.cache_name}")
        return control_pb._CreateCacheResponse()

    def DeleteCache(self, request: Any, context: grpc.ServicerContext) -> Any:
        with self._store.lock:
            self._calls["DeleteCache"] += 1
            gone = self._store.caches.pop(request.cache_name, None)
        if gone is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f"Cache not found: {request.cache_name}")
        return control_pb._DeleteCacheResponse()

    def FlushCache(self, request: Any, context: grpc.ServicerContext) -> Any:
        with self._store.lock:
            self._calls["FlushCache"] += 1
            cache = self._store.caches.get(request.cache_name)
            if cache is not None:
                cache.clear()
        if cache is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f"Cache not found: {request.cache_name}")
        return control_pb._FlushCacheResponse()


class MomentoStandIn(Lifecycle):
    """The stand-in server: `start()` returns its port; `cache_client()` builds a real SDK client for it."""

    def __init__(self, caches: tuple[str, ...] = ("gateway",), *, max_workers: int = 8) -> None:
        self._offset = 0.0
        self._store = _Store(caches, lambda: time.monotonic() + self._offset)
        self.calls: Counter[str] = Counter()
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers))
        pb_grpc.add_ScsServicer_to_server(  # type: ignore[no-untyped-call]
            _CacheService(self._store, self.calls), self._server
        )
        control_grpc.add_ScsControlServicer_to_server(  # type: ignore[no-untyped-call]
            _ControlService(self._store, self.calls), self._server
        )
        self.host = HOST
        self.port = 0

    @property
    def endpoint(self) -> str:
        """`host:port`, e.g. for a `MOMENTO_LOCAL_ENDPOINT`-style setting of a subprocess."""
        if not self.port:
            raise RuntimeError("the stand-in is not started")
        return f"{self.host}:{self.port}"

    def start(self) -> int:
        if self.port:
            raise RuntimeError("the stand-in was already started")
        self.port = self._server.add_insecure_port(f"{self.host}:0")
        self._server.start()
        return self.port

    def stop(self) -> None:
        self._server.stop(grace=None).wait(5)

    # --------------------------------------------------------------- the SDK side

    def cache_client(self, default_ttl: timedelta = timedelta(seconds=60)) -> Any:
        """A real `momento.CacheClient` connected to this stand-in (close it, or use it in `with`)."""
        from momento import CacheClient, Configurations, CredentialProvider

        credentials = CredentialProvider.for_momento_local(self.host, self.port)
        return CacheClient(Configurations.Laptop.latest(), credentials, default_ttl)

    # --------------------------------------------------------------- test controls

    def advance(self, seconds: float) -> None:
        """Move the stand-in's clock forward: items whose TTL has run out by then are gone."""
        with self._store.lock:
            self._offset += seconds

    def reset(self) -> None:
        """Empty every cache and zero the call counts (the caches themselves stay)."""
        with self._store.lock:
            for cache in self._store.caches.values():
                cache.clear()
            self.calls.clear()

    def items(self, cache: str) -> dict[bytes, bytes | dict[bytes, bytes]]:
        """What is stored and unexpired in `cache`, for assertions on stored content."""
        with self._store.lock:
            store = self._store.caches[cache]
            for key in list(store):
                self._store.live(store, key)
            return {
                key: item.value if isinstance(item.value, bytes) else dict(item.value) for key, item in store.items()
            }

    def ttl_remaining(self, cache: str, key: bytes | str) -> float | None:
        """Seconds left before `key` expires, or None when it is absent."""
        raw = key.encode() if isinstance(key, str) else key
        with self._store.lock:
            item = self._store.live(self._store.caches[cache], raw)
            return None if item is None else item.expires_at - self._store.clock()
