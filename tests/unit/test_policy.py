"""The origin policy's pure logic (no sockets): origin parsing, the wildcard's edges,
the same-host default, the TOML layout, atomic live updates."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from unbroken.errors import ConfigError
from unbroken.server.policy import LivePolicy, OriginPolicy, host_name, parse_origin

label = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True)
hostname = st.lists(label, min_size=1, max_size=4).map(".".join)


def test_parse_origin_fills_default_ports_and_lowercases() -> None:
    assert parse_origin("HTTPS://App.Example.com") == ("https", "app.example.com", 443)
    assert parse_origin("http://localhost:5173") == ("http", "localhost", 5173)
    assert parse_origin("http://[::1]:8000") == ("http", "::1", 8000)
    assert parse_origin("chrome-extension://abcdef") == ("chrome-extension", "abcdef", None)
    for bad in ["", "null", "example.com", "https://", "https://a/b", "https://u@a", "http://a:x",
                "http://a:70000", "http://[::1", "http://::1", "https://a?b"]:  # fmt: skip
        assert parse_origin(bad) is None, bad


def test_host_name() -> None:
    assert host_name("Example.COM:8000") == "example.com"
    assert host_name("[::1]:80") == "::1"
    assert host_name("example.com.") == "example.com"
    assert host_name(None) is None
    assert host_name("a b") is None


@given(sub=hostname, suffix=hostname)
def test_wildcard_matches_every_subdomain_and_only_those(sub: str, suffix: str) -> None:
    p = OriginPolicy(allowed_origins=(f"https://*.{suffix}",), allow_same_host=False)
    assert p.check(f"https://{sub}.{suffix}", "api").allowed
    assert not p.check(f"https://{suffix}", "api").allowed  # not the apex
    assert not p.check(f"https://{suffix}.{sub}", "api").allowed or f"{suffix}.{sub}".endswith(
        "." + suffix
    )
    assert not p.check(f"https://{sub}-{suffix}", "api").allowed
    assert not p.check(f"https://{sub}{suffix}", "api").allowed
    assert not p.check(f"http://{sub}.{suffix}", "api").allowed  # another scheme
    assert not p.check(f"https://{sub}.{suffix}:444", "api").allowed  # another port


@given(host=hostname, other=hostname, port=st.integers(1, 65535))
def test_default_allows_the_same_hostname_only(host: str, other: str, port: int) -> None:
    p = OriginPolicy()
    assert p.check(f"http://{host}:{port}", f"{host}:8000").allowed
    assert p.check(f"https://{host}", host).allowed
    assert p.check(f"https://{other}", host).allowed == (other == host)
    assert p.check(None, host).allowed  # not a browser
    assert not p.check("null", host).allowed


def test_named_attack_shapes_are_refused() -> None:
    p = OriginPolicy(allowed_origins=("https://*.example.com", "https://app.example.net"))
    for evil in ["https://example.com.evil.net", "https://evil-example.com",
                 "https://app.example.net.evil.net", "https://app.example.net:8443",
                 "http://app.example.net", "https://xexample.com"]:  # fmt: skip
        assert not p.check(evil, "api.example.net").allowed, evil
    assert p.check("https://a.example.com", "api").reason == "allowlisted https://*.example.com"


def test_bad_allowlist_entries_are_config_errors() -> None:
    for entry in ["*", "https://a.*.example.com", "https://*.*.example.com", "example.com",
                  "https://example.com/path", "chrome-extension://*.x"]:  # fmt: skip
        with pytest.raises(ConfigError):
            OriginPolicy(allowed_origins=(entry,))
    with pytest.raises(ConfigError, match="list of strings"):
        OriginPolicy(allowed_origins="https://a.example")  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        OriginPolicy(cors_max_age=-1)
    with pytest.raises(ConfigError):
        OriginPolicy(allow_any_origin="yes")  # type: ignore[arg-type]


def test_toml_layout(tmp_path: Path) -> None:
    f = tmp_path / "policy.toml"
    f.write_text(
        "[origins]\n"
        'allow = ["https://app.example.com", "https://*.example.org"]\n'
        "same_host = false\n"
        "[cors]\n"
        'allow_headers = ["Authorization"]\n'
        "allow_credentials = true\n"
        "max_age = 60\n"
    )
    p = OriginPolicy.from_toml(f)
    assert p == OriginPolicy(
        allowed_origins=("https://app.example.com", "https://*.example.org"),
        allow_same_host=False,
        cors_allow_headers=("authorization",),
        cors_allow_credentials=True,
        cors_max_age=60,
    )
    assert OriginPolicy.from_toml(_write(tmp_path, "")) == OriginPolicy()
    for text, why in [
        ("[origins]\nalow = []\n", "unknown key"),
        ("[origin]\n", "unknown section"),
        ('[origins]\nallow = "https://a.example"\n', "list of strings"),
        ("[origins\n", "policy file"),
        ('[origins]\nallow = ["*"]\n', "allow_any_origin"),
    ]:
        with pytest.raises(ConfigError, match=why):
            OriginPolicy.from_toml(_write(tmp_path, text))
    with pytest.raises(ConfigError, match="policy file"):
        OriginPolicy.from_toml(tmp_path / "missing.toml")


def _write(tmp: Path, text: str) -> Path:
    f = tmp / "p.toml"
    f.write_text(text)
    return f


def test_live_update_swaps_a_new_snapshot_and_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="unbroken")
    live = LivePolicy(OriginPolicy(allowed_origins=("https://a.example",)))
    before = live.current
    after = live.update(allowed_origins=["https://b.example"])
    assert live.current is after and before.allowed_origins == ("https://a.example",)
    assert after.allowed_origins == ("https://b.example",)
    assert live.version == 2
    assert "origin policy updated version=2" in caplog.text
    with pytest.raises(ConfigError, match="known fields"):
        live.update(allowed=["x"])
    with pytest.raises(ConfigError):
        live.update(allowed_origins=["*"])
    assert live.current is after and live.version == 2  # a bad update changes nothing
    live.update(OriginPolicy(allow_any_origin=True))
    assert live.current.allow_any_origin and live.version == 3


def test_reload_keeps_the_old_policy_on_a_bad_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="unbroken")
    f = _write(tmp_path, '[origins]\nallow = ["https://a.example"]\n')
    live = LivePolicy(source=f)
    assert live.reload() is True
    good = live.current
    assert good.allowed_origins == ("https://a.example",)
    f.write_text('[origins]\nallow = ["https://a.example/oops"]\n')
    assert live.reload() is False
    assert live.current is good
    assert "origin policy reload failed version=2 (kept)" in caplog.text
    assert "is not an origin" in caplog.text


def test_concurrent_updates_lose_nothing() -> None:
    live = LivePolicy()

    def bump(i: int) -> None:
        for _ in range(200):
            live.update(cors_max_age=i)

    threads = [threading.Thread(target=bump, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert live.version == 1 + 4 * 200
