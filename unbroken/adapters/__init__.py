"""Adapters: forward a model SDK's stream into an answer, one call per model turn.

Each source has its own module, importable only with its SDK installed (an extra):

- :mod:`unbroken.adapters.openai` (``pip install 'unbroken[openai]'``):
  :func:`~unbroken.adapters.openai.forward_responses` (Responses API events) and
  :func:`~unbroken.adapters.openai.forward_chat` (Chat Completions chunks);
- :mod:`unbroken.adapters.anthropic` (``pip install 'unbroken[anthropic]'``):
  :func:`~unbroken.adapters.anthropic.forward_messages` (Messages stream events);
- :mod:`unbroken.adapters.pydantic_ai` (``pip install 'unbroken[pydantic-ai]'``):
  :func:`~unbroken.adapters.pydantic_ai.forward_pydantic_ai` (a whole agent run:
  its model responses, tool calls and tool results);
- :mod:`unbroken.adapters.langgraph` (``pip install 'unbroken[langgraph]'``):
  :func:`~unbroken.adapters.langgraph.forward_graph` (a whole LangGraph run from
  ``astream``/``astream_events``: messages, tool calls and results, custom payloads);
- :mod:`unbroken.adapters.openai_agents` (``pip install 'unbroken[openai-agents]'``):
  :func:`~unbroken.adapters.openai_agents.forward_run` (a whole OpenAI Agents SDK run
  from ``Runner.run_streamed``: model responses, tool calls and results, handoffs).

Every adapter has one shape: ``turn = await forward_x(out, stream)``. It writes the
model's text, reasoning and tool calls to ``out`` as they arrive, with the agent API's
part calls (``out.text``, ``out.reasoning``, ``out.tool_call``, ``out.tool_result``),
ends them, adds a ``metadata`` part (``out.metadata``: finish reason, usage), and
returns a :class:`Turn` for the agent's next step (run the tools, call the model again).
A provider stream that fails, stalls (``stall_timeout``) or ends early ends its open
parts with the reason and raises; the agent may call the model again and forward
the new stream into the same answer (new part ids). docs/how-to/adapters.md.
"""

from __future__ import annotations

from ._common import ToolCall, Turn

__all__ = ["ToolCall", "Turn"]
