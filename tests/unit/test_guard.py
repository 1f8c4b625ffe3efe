"""Connection guard arithmetic, close reasons, and the app's hardening settings (no sockets)."""

from __future__ import annotations

import dataclasses

import pytest

from unbroken.errors import ConfigError
from unbroken.protocol.codes import MAX_CLOSE_REASON, close_reason
from unbroken.protocol.frames import DEFAULT_MAX_CLIENT_FRAME, DEFAULT_MAX_HELLO_FRAME
from unbroken.server import ServerConfig, Unbroken
from unbroken.server.guard import (
    ConnectionLimits,
    accept_backlog,
    default_max_connections,
    max_refusing,
)


def test_default_cap_leaves_descriptors_for_a_batch_of_accepts_and_refusals() -> None:
    assert default_max_connections(1024) == 688
    assert default_max_connections(20_000) == 17_632
    assert default_max_connections(65_536) == 63_168
    assert default_max_connections(10) == 1


def test_the_accept_backlog_fits_in_the_descriptors_the_cap_leaves() -> None:
    for nofile in (1024, 20_000, 65_536):  # the default cap leaves a whole batch
        cap = default_max_connections(nofile)
        assert accept_backlog(2048, cap, nofile) == min(2048, nofile // 4)
        assert cap + max_refusing(cap) + accept_backlog(2048, cap, nofile) + 64 <= nofile
    assert accept_backlog(2048, 1000, 128) == 16  # a cap too high: never below 16


def test_limits_are_checked() -> None:
    with pytest.raises(ValueError):
        ConnectionLimits(max_connections=0)
    with pytest.raises(ValueError):
        ConnectionLimits(max_per_ip=0)
    with pytest.raises(ValueError):
        ConnectionLimits(handshake_timeout=0)
    assert ConnectionLimits(max_connections=5).resolved_max_connections() == 5


@pytest.mark.parametrize(
    "reason",
    ["", "short", "x" * 200, "é" * 100, "日本語" * 30, "a" * 122 + "é", "😀" * 40],
)
def test_a_close_reason_fits_in_123_bytes_and_stays_valid_utf8(reason: str) -> None:
    cut = close_reason(reason)
    data = cut.encode()
    assert len(data) <= MAX_CLOSE_REASON
    assert reason.startswith(cut)
    if len(reason.encode()) <= MAX_CLOSE_REASON:
        assert cut == reason


def test_app_frame_limits_default_small_and_never_above_max_frame() -> None:
    app = Unbroken(allow_anonymous=True)
    assert app.max_client_frame == DEFAULT_MAX_CLIENT_FRAME == 1024 * 1024
    assert app.max_hello_frame == DEFAULT_MAX_HELLO_FRAME == 64 * 1024
    assert app.limits.max_client_frame == app.max_client_frame  # told to clients
    small = Unbroken(
        allow_anonymous=True, max_frame=64 * 1024, max_chunk=16 * 1024, frame_cap=32 * 1024
    )
    assert small.max_client_frame == 64 * 1024
    assert small.max_hello_frame <= small.max_client_frame
    with pytest.raises(ConfigError):
        Unbroken(allow_anonymous=True, max_client_frame=10)


def test_hardening_switches_default_off() -> None:
    app = Unbroken(allow_anonymous=True)
    assert not app.health_detail
    assert not app.expose_agent_names
    assert app.connection_limits == ConnectionLimits()
    assert app.connection_limits.max_per_ip is None


def test_the_app_builds_one_frozen_config_from_its_arguments() -> None:
    app = Unbroken(allow_anonymous=True, heartbeat=0.5, window=4096, coalesce=0.0)
    config = app.config
    assert isinstance(config, ServerConfig)
    assert (config.heartbeat, config.limits.window, config.coalesce) == (0.5, 4096, 0.0)
    assert config.peer_silence == pytest.approx(3 * 0.5 + 0.3)  # the default follows heartbeat
    assert config.allow_anonymous and not config.expose_agent_names
    assert (app.heartbeat, app.limits) == (0.5, config.limits)  # read-only views
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.heartbeat = 1.0  # type: ignore[misc]


@pytest.mark.parametrize(
    "bad",
    [
        {"heartbeat": 0.0},
        {"frame_cap": 0},
        {"max_hello_frame": 512},
        {"coalesce": -0.1},
        {"peer_silence": 0.0},
        {"send_timeout": 0.0},
        {"hello_timeout": -1.0},
        {"request_rate": -1.0},
        {"max_outbox": 0},
        {"start_burst": -1},
    ],
)
def test_a_config_out_of_range_is_refused(bad: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        ServerConfig(**bad)  # type: ignore[arg-type]
    ServerConfig()  # the defaults are valid
