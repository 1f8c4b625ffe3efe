"""Run inside the throwaway venv that has ``openai-agents`` (and websockets 16, pinned by
the test): a real ``agents.Agent`` with a function tool, its ``Runner.run_streamed`` run
forwarded by ``forward_run`` inside an unbroken agent, served by unbroken, read by the
unbroken client through a fault proxy that cuts it mid-answer.

argv: the fake provider's base URL. Prints a JSON line ``{"cut": n}`` once the client's
connections were cut (the test then lets the provider go on), then the answer as JSON.
"""

from __future__ import annotations

import asyncio
import json
import sys
from importlib.metadata import version
from typing import Any

from agents import Agent, Runner, function_tool, set_tracing_disabled
from agents.models.openai_responses import OpenAIResponsesModel
from openai import AsyncOpenAI

from unbroken import BackoffPolicy
from unbroken.adapters.openai_agents import forward_run
from unbroken.chaos import FaultProxy
from unbroken.client import Client
from unbroken.server import Unbroken, reveal_exception
from unbroken.testing import serve

FAST = BackoffPolicy(base=0.01, cap=0.05, max_attempts=50, deadline=60)
calls: list[dict[str, Any]] = []


@function_tool
def get_weather(city: str, units: str) -> dict[str, Any]:
    """The weather in a city."""
    calls.append({"city": city, "units": units})
    return {"city": city, "temp": 21, "units": units, "sky": "sunny"}


async def main(base_url: str) -> None:
    set_tracing_disabled(True)  # no trace export to the network
    client = AsyncOpenAI(base_url=base_url, api_key="sk-test", max_retries=0)
    weather = Agent(
        name="weather",
        instructions="Answer with the weather.",
        model=OpenAIResponsesModel(model="agents_run", openai_client=client),
        tools=[get_weather],
    )
    app = Unbroken(allow_anonymous=True, redact=reveal_exception)
    turns: list[Any] = []

    @app.agent("ask")
    async def ask(req: Any, out: Any) -> None:
        turns.append(await forward_run(out, Runner.run_streamed(weather, "Weather in Paris?")))

    async with (
        serve(app) as srv,
        FaultProxy(upstream=("127.0.0.1", srv.port)) as proxy,
        Client(f"ws://127.0.0.1:{proxy.port}/ws", policy=FAST) as reader,
    ):
        st = await reader.start("ask")
        async for ev in st:
            if ev.seq >= 12:
                break
        print(json.dumps({"cut": await proxy.cut_all()}), flush=True)
        a = await asyncio.wait_for(st.wait(), 60)
        stored = await app.store.digest_at(st.id, a.events)
    (turn,) = turns
    print(
        json.dumps(
            {
                "websockets": version("websockets"),
                "openai_agents": version("openai-agents"),
                "status": a.status,
                "digest_ok": stored is not None and a.digest == stored.hex(),
                "disconnects": len([e for e in reader.history if e.kind == "disconnected"]),
                "order": a.order,
                "parts": {
                    k: {"text": p.text, "error": p.error, "ended": p.ended, "mime": p.mime}
                    for k, p in a.parts.items()
                },
                "tool_calls": [
                    [c.id, c.name, c.args, c.result, c.result_error] for c in a.tool_calls
                ],
                "metadata": [a.json(k) for k in a.order if k.startswith("metadata")],
                "usage": a.usage,
                "finish_reason": a.finish_reason,
                "tool_ran": calls,
                "turn": {
                    "usage": turn.usage,
                    "finish_reason": turn.finish_reason,
                    "final_output": turn.result.final_output,
                },
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
