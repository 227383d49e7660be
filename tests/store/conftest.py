"""Close every store a test opened (the store holds raw file descriptors)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.store import helpers


@pytest.fixture(autouse=True)
def close_stores() -> Iterator[None]:
    yield
    while helpers.opened:
        helpers.opened.pop().close()
