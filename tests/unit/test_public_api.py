"""The small public surface of ``import unbroken``."""

from __future__ import annotations

import subprocess
import sys

import pytest

import unbroken


def test_import_unbroken_does_not_load_the_server_stack() -> None:
    code = (
        "import sys, unbroken; "
        "assert not {'starlette', 'uvicorn', 'websockets'} & set(sys.modules), "
        "sorted(m for m in sys.modules if m.split('.')[0] in ('starlette','uvicorn','websockets'))"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_lazy_names_resolve_to_the_real_classes() -> None:
    from unbroken.client import Client
    from unbroken.server import Unbroken
    from unbroken.store.memory import MemoryStore

    assert unbroken.Client is Client
    assert unbroken.Unbroken is Unbroken
    assert unbroken.MemoryStore is MemoryStore
    assert set(unbroken.__all__) >= {"Client", "Unbroken", "StreamGone", "BackoffPolicy"}


def test_unknown_attribute_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        _ = unbroken.Nope  # type: ignore[attr-defined]


def test_every_error_is_an_unbroken_error() -> None:
    for name in (
        "AuthError",
        "IntegrityError",
        "Overloaded",
        "ProtocolError",
        "ReconnectExhausted",
        "RequestTimeout",
        "StreamFailed",
        "StreamGone",
        "Forbidden",
    ):
        assert issubclass(getattr(unbroken, name), unbroken.UnbrokenError)


def test_every_exception_a_user_can_catch_lives_in_errors_and_is_exported() -> None:
    import importlib
    import inspect
    import pkgutil

    import unbroken.errors as errors

    strays: list[str] = []
    for info in pkgutil.walk_packages(unbroken.__path__, "unbroken."):
        if info.name == "unbroken.errors" or info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        for name, obj in vars(module).items():
            if (
                inspect.isclass(obj)
                and issubclass(obj, BaseException)
                and obj.__module__ == info.name
                and not name.startswith("_")
            ):
                strays.append(f"{info.name}.{name}")
    assert strays == [], f"exceptions outside unbroken/errors.py: {strays}"
    public = [
        name
        for name, obj in vars(errors).items()
        if inspect.isclass(obj) and issubclass(obj, Exception) and obj.__module__ == errors.__name__
    ]
    for name in public:
        assert name in unbroken.__all__, f"{name} is not exported from unbroken"
        assert issubclass(getattr(unbroken, name), unbroken.UnbrokenError), name


def test_the_client_classes_its_reference_names_are_exported() -> None:
    import unbroken.client as client

    # docs/reference/client.md: "The classes are in `unbroken.client` (...)"
    for name in (
        "PartStarted",
        "TextDelta",
        "JsonFragment",
        "DataChunk",
        "PartEnded",
        "StreamEnded",
        "ToolCall",
        "Answer",
        "LiveStream",
        "ConnectionEvent",
    ):
        assert name in client.__all__ and hasattr(client, name), name
