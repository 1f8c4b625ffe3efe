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


def test_an_end_received_before_a_drop_is_not_acked_on_the_next_connection() -> None:
    """The new connection never had the stream: an ack there is only a ``bad_ack``."""
    from unbroken.protocol.digest import chain
    from unbroken.protocol.events import end
    from unbroken.protocol.frames import Started, encode_events_frame, encode_items

    cs = ClientSession()
    cs.connect()
    cs.receive(encode(Welcome("s", 1000, "ep")))
    assert cs.start("r", "agent", None) is not None
    cs.receive(encode(Started(req="r", stream="st", epoch="ep")))
    events = [end(1, "completed")]
    cs.receive(encode_events_frame("st", 1, encode_items(events), chain("st", "ep", events)[-1]))
    cs.connection_lost()  # before the end's ack went out
    cs.connect()
    cs.receive(encode(Welcome("s", 1000, "ep")))
    assert cs.after_welcome() == []
    assert cs.take_acks(10.0) == []
