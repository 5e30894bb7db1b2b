"""Servers for the contract suite: moto (DynamoDB) and the Momento stand-in, one each per session.

Each is started the first time a test asks for it, so running only the local adapters' cases
starts neither.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.momento_standin import MomentoStandIn
from tests.support.moto_server import MotoServer, moto_server

MOMENTO_CACHE = "gateway"


@pytest.fixture(scope="session")
def moto() -> Iterator[MotoServer]:
    with moto_server() as server:
        yield server


@pytest.fixture(scope="session")
def moto_serialised() -> Iterator[MotoServer]:
    """A moto server that handles one request at a time (atomic requests, for concurrency tests)."""
    with moto_server(serialised=True) as server:
        yield server


@pytest.fixture(scope="session")
def momento_standin() -> Iterator[MomentoStandIn]:
    with MomentoStandIn(caches=(MOMENTO_CACHE,)) as standin:
        yield standin


@pytest.fixture(scope="session")
def momento_client(momento_standin: MomentoStandIn) -> Iterator[Any]:
    with momento_standin.cache_client() as client:
        yield client


@pytest.fixture
def momento(momento_standin: MomentoStandIn) -> MomentoStandIn:
    """The stand-in, emptied for this test."""
    momento_standin.reset()
    return momento_standin
