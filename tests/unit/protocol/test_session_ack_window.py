"""The client acks within the server's window, whatever the window is."""

from __future__ import annotations

from unbroken.protocol.client_session import ClientSession
from unbroken.protocol.frames import Limits, Welcome, encode


def test_client_acks_at_a_quarter_of_a_small_server_window() -> None:
    cs = ClientSession()
    cs.connect()
    cs.receive(encode(Welcome("s", 1000, "ep", limits=Limits(window=4096))))
    assert cs.ack_every == 1024


def test_client_keeps_its_default_ack_interval_under_a_large_window() -> None:
    cs = ClientSession()
    default = cs.ack_every
    cs.connect()
    cs.receive(encode(Welcome("s", 1000, "ep", limits=Limits(window=64 * 1024 * 1024))))
    assert cs.ack_every == default
