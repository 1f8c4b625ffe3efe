"""``out.data``'s mime rules hold at run time too (the overloads state them for a type
checker): a JSON body needs a JSON mime, bytes their own type (``;base64`` is added),
str and bytes a mime at all; each refusal is a PartError the agent can catch, and the
answer goes on."""

from __future__ import annotations

import asyncio
from typing import Any

from unbroken import PartError
from unbroken.client import Client
from unbroken.server import Output, Request, Unbroken
from unbroken.testing import serve


async def test_bad_mimes_are_part_errors_and_good_ones_reach_the_reader() -> None:
    app = Unbroken(allow_anonymous=True)
    refused: list[str] = []

    @app.agent("data")
    async def data(_req: Request, out: Output) -> None:
        bad: list[tuple[Any, str | None]] = [
            ({"a": 1}, "text/csv"),
            (b"PNG", "image/png;base64"),
            (b"PNG", None),
            ("a,b", None),
        ]
        for body, mime in bad:
            try:
                if mime is None:
                    await out.data("x", body)
                else:
                    await out.data("x", body, mime=mime)
            except PartError as exc:
                refused.append(str(exc))
        await out.data("chart", {"mark": "bar"})  # JSON by default
        await out.data("image", b"PNG", mime="image/png")

    async with serve(app) as srv, Client(srv.url) as c:
        answer = await asyncio.wait_for((await c.start("data")).wait(), 20)
    assert len(refused) == 4, refused
    assert "must be a JSON type" in refused[0] and "';base64' is added" in refused[1]
    assert all("needs its mime" in r for r in refused[2:])
    assert answer.complete and answer.order == ["chart", "image"]
    assert answer.parts["chart"].mime == "application/json"
    assert answer.json("chart") == {"mark": "bar"}
    assert answer.parts["image"].value == b"PNG"
    assert answer.parts["image"].mime == "image/png;base64"
