"""Version names, negotiation and the 4005 reason (pure)."""

from __future__ import annotations

from unbroken.errors import ConnectionLost, ProtocolError, UnsupportedVersion
from unbroken.protocol import versions
from unbroken.protocol.codes import CloseCode
from unbroken.protocol.retry import fatal_error, should_retry


def test_normalize_takes_names_subprotocols_and_a_comma_list() -> None:
    assert versions.normalize("v1") == ("v1",)
    assert versions.normalize(["unbroken.v1", "v1"]) == ("v1",)
    assert versions.normalize(" v1 ,") == ("v1",)
    for v in versions.KNOWN:
        assert versions.normalize(versions.subprotocol(v)) == (v,)
    # newest first, whatever the order given
    assert versions.normalize(list(reversed(versions.KNOWN))) == versions.KNOWN


def test_negotiate_picks_the_newest_both_speak() -> None:
    assert versions.negotiate(["unbroken.v9", "unbroken.v1"], ("v1",)) == "v1"
    assert versions.negotiate(["unbroken.v9"], ("v1",)) is None
    assert versions.negotiate(["chat"], ("v1",)) is None
    assert versions.negotiate([], ("v1",)) == "v1"  # an old client offers nothing


def test_chosen_version_reads_the_servers_answer() -> None:
    assert versions.chosen_version(None) == "v1"
    assert versions.chosen_version("unbroken.v1") == "v1"
    assert versions.chosen_version("chat") is None


def test_the_refusal_reason_round_trips_and_fits_a_close_frame() -> None:
    reason = versions.refusal_reason(versions.KNOWN)
    assert versions.server_versions(reason) == versions.KNOWN
    assert len(reason.encode()) <= 123
    # an older server's reason still names its versions
    assert versions.server_versions("supported subprotocols: unbroken.v1") == ("v1",)


def test_close_4005_becomes_unsupported_version_and_is_not_retried() -> None:
    lost = ConnectionLost(versions.refusal_reason(("v1",)), CloseCode.UNSUPPORTED_VERSION)
    assert not should_retry(lost)
    err = fatal_error(lost, versions=("v9",))
    assert isinstance(err, UnsupportedVersion) and isinstance(err, ProtocolError)
    assert err.client_versions == ("v9",) and err.server_versions == ("v1",)
    assert not should_retry(err)
