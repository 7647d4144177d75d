"""Fixtures shared by the unit tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.unit.test_worker import Rig, make_rig


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    """A core worker on the in-memory broker and fakeredis, stopped after the test."""
    r = await make_rig()
    yield r
    await r.worker.stop()
    await r.services.close()
