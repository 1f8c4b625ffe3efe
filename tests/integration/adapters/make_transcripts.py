"""Writes the SSE transcripts in ``transcripts/`` (run once; the files are committed).

Their shape follows the providers' documented stream formats: OpenAI Responses
streaming events, Chat Completions chunks (``data:`` only, ``[DONE]``), Anthropic
Messages events (``event:`` + ``data:``). Marker lines the fake provider acts on:
``#GATE`` (wait until the test opens the gate), ``#CUT`` (abort the connection),
``#STALL`` (send nothing more).
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).parent / "transcripts"
TEXT = [f"Word{i:02d} " for i in range(40)]
REASONING = ["The user ", "asks about ", "the weather; ", "I should call ", "the tool."]
ARGS = ['{"ci', 'ty": "Par', "is, Fr", 'ance", "un', 'its": "c"}']
ARGS2 = ['{"city"', ': "Oslo"}']


def sse(event: str | None, data: object) -> str:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(data, separators=(',', ':'))}\n\n"


def responses(items: bool = False) -> str:
    """``items``: ``response.completed`` lists the output items (as the API does; the
    Agents SDK reads them), not an empty ``output``."""
    resp = {
        "id": "resp_01",
        "object": "response",
        "created_at": 1765000000,
        "status": "in_progress",
        "model": "gpt-5-mini-2025-08-07",
        "output": [],
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
    }
    n = iter(range(1000))
    out = []

    def ev(t: str, **body: object) -> None:
        out.append(sse(t, {"type": t, "sequence_number": next(n), **body}))

    ev("response.created", response=resp)
    ev("response.in_progress", response=resp)
    rs = {"id": "rs_01", "type": "reasoning", "summary": []}
    ev("response.output_item.added", output_index=0, item=rs)
    ev(
        "response.reasoning_summary_part.added",
        item_id="rs_01",
        output_index=0,
        summary_index=0,
        part={"type": "summary_text", "text": ""},
    )
    for d in REASONING:
        ev(
            "response.reasoning_summary_text.delta",
            item_id="rs_01",
            output_index=0,
            summary_index=0,
            delta=d,
        )
    ev(
        "response.reasoning_summary_text.done",
        item_id="rs_01",
        output_index=0,
        summary_index=0,
        text="".join(REASONING),
    )
    ev(
        "response.output_item.done",
        output_index=0,
        item={**rs, "summary": [{"type": "summary_text", "text": "".join(REASONING)}]},
    )
    msg = {
        "id": "msg_01",
        "type": "message",
        "status": "in_progress",
        "role": "assistant",
        "content": [],
    }
    ev("response.output_item.added", output_index=1, item=msg)
    ev(
        "response.content_part.added",
        item_id="msg_01",
        output_index=1,
        content_index=0,
        part={"type": "output_text", "text": "", "annotations": []},
    )
    for i, d in enumerate(TEXT):
        if i == 20:
            out.append("#GATE\n\n")
        ev(
            "response.output_text.delta",
            item_id="msg_01",
            output_index=1,
            content_index=0,
            delta=d,
            logprobs=[],
        )
    full = "".join(TEXT)
    ev(
        "response.output_text.done",
        item_id="msg_01",
        output_index=1,
        content_index=0,
        text=full,
        logprobs=[],
    )
    done_part = {"type": "output_text", "text": full, "annotations": []}
    ev(
        "response.content_part.done",
        item_id="msg_01",
        output_index=1,
        content_index=0,
        part=done_part,
    )
    ev(
        "response.output_item.done",
        output_index=1,
        item={**msg, "status": "completed", "content": [done_part]},
    )
    fc = {
        "id": "fc_01",
        "type": "function_call",
        "status": "in_progress",
        "arguments": "",
        "call_id": "call_Wx1",
        "name": "get_weather",
    }
    ev("response.output_item.added", output_index=2, item=fc)
    for d in ARGS:
        ev("response.function_call_arguments.delta", item_id="fc_01", output_index=2, delta=d)
    ev(
        "response.function_call_arguments.done",
        item_id="fc_01",
        output_index=2,
        arguments="".join(ARGS),
    )
    ev(
        "response.output_item.done",
        output_index=2,
        item={**fc, "status": "completed", "arguments": "".join(ARGS)},
    )
    usage = {
        "input_tokens": 75,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": 123,
        "output_tokens_details": {"reasoning_tokens": 64},
        "total_tokens": 198,
    }
    done = {**resp, "status": "completed", "usage": usage}
    if items:
        done["output"] = [
            {**rs, "summary": [{"type": "summary_text", "text": "".join(REASONING)}]},
            {**msg, "status": "completed", "content": [done_part]},
            {**fc, "status": "completed", "arguments": "".join(ARGS)},
        ]
    ev("response.completed", response=done)
    return "".join(out)


FINAL = ["Paris: ", "21 °C, ", "sunny."]


def agents_run() -> str:
    return responses(items=True)  # an Agents SDK run: the model calls get_weather…


def agents_run_2() -> str:
    """…then answers with its result."""
    resp = {
        "id": "resp_02",
        "object": "response",
        "created_at": 1765000001,
        "status": "in_progress",
        "model": "gpt-5-mini-2025-08-07",
        "output": [],
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
    }
    n = iter(range(1000))
    out = []

    def ev(t: str, **body: object) -> None:
        out.append(sse(t, {"type": t, "sequence_number": next(n), **body}))

    ev("response.created", response=resp)
    msg = {"id": "msg_02", "type": "message", "status": "in_progress", "role": "assistant"}
    ev("response.output_item.added", output_index=0, item={**msg, "content": []})
    empty = {"type": "output_text", "text": "", "annotations": []}
    ev("response.content_part.added", item_id="msg_02", output_index=0, content_index=0, part=empty)
    for d in FINAL:
        ev(
            "response.output_text.delta",
            item_id="msg_02",
            output_index=0,
            content_index=0,
            delta=d,
            logprobs=[],
        )
    part = {**empty, "text": "".join(FINAL)}
    ev("response.content_part.done", item_id="msg_02", output_index=0, content_index=0, part=part)
    item = {**msg, "status": "completed", "content": [part]}
    ev("response.output_item.done", output_index=0, item=item)
    usage = {
        "input_tokens": 240,
        "input_tokens_details": {"cached_tokens": 64},
        "output_tokens": 9,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 249,
    }
    done = {**resp, "status": "completed", "output": [item], "usage": usage}
    ev("response.completed", response=done)
    return "".join(out)


def responses_error() -> str:
    out = [
        sse(
            "response.created",
            {
                "type": "response.created",
                "sequence_number": 0,
                "response": {
                    "id": "resp_02",
                    "object": "response",
                    "status": "in_progress",
                    "model": "gpt-5-mini",
                    "output": [],
                },
            },
        )
    ]
    for i, d in enumerate(TEXT[:5]):
        out.append(
            sse(
                "response.output_text.delta",
                {
                    "type": "response.output_text.delta",
                    "sequence_number": i + 1,
                    "item_id": "msg_02",
                    "output_index": 0,
                    "content_index": 0,
                    "delta": d,
                    "logprobs": [],
                },
            )
        )
    out.append(
        sse(
            "error",
            {
                "type": "error",
                "sequence_number": 9,
                "code": "server_error",
                "message": "The model produced invalid content.",
                "param": None,
            },
        )
    )
    return "".join(out)


def chunk(
    cid: str,
    delta: dict[str, object],
    finish: str | None = None,
    usage: object = None,
    choices: bool = True,
) -> str:
    body: dict[str, object] = {
        "id": cid,
        "object": "chat.completion.chunk",
        "created": 1765000000,
        "model": "gpt-4.1-mini-2025-04-14",
        "system_fingerprint": "fp_01",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
        if choices
        else [],
    }
    if usage is not None:
        body["usage"] = usage
    return sse(None, body)


def chat_tools() -> str:
    c = "chatcmpl-01"
    out = [chunk(c, {"role": "assistant", "content": "", "refusal": None})]
    for i, d in enumerate(TEXT):
        if i == 20:
            out.append("#GATE\n\n")
        out.append(chunk(c, {"content": d}))
    for j, (cid, name, args) in enumerate(
        [("call_A1", "get_weather", ARGS), ("call_B2", "get_weather", ARGS2)]
    ):
        out.append(
            chunk(
                c,
                {
                    "tool_calls": [
                        {
                            "index": j,
                            "id": cid,
                            "type": "function",
                            "function": {"name": name, "arguments": ""},
                        }
                    ]
                },
            )
        )
        for a in args:
            out.append(chunk(c, {"tool_calls": [{"index": j, "function": {"arguments": a}}]}))
    out.append(chunk(c, {}, "tool_calls"))
    usage = {
        "prompt_tokens": 82,
        "completion_tokens": 51,
        "total_tokens": 133,
        "completion_tokens_details": {"reasoning_tokens": 0},
    }
    out.append(chunk(c, {}, usage=usage, choices=False))
    out.append("data: [DONE]\n\n")
    return "".join(out)


def chat_reasoning() -> str:
    # the shape OpenAI-compatible reasoning servers send (reasoning_content deltas)
    c = "chatcmpl-02"
    out = [chunk(c, {"role": "assistant", "content": None, "reasoning_content": ""})]
    out += [chunk(c, {"content": None, "reasoning_content": d}) for d in REASONING]
    out += [chunk(c, {"content": d}) for d in TEXT[:6]]
    out.append(chunk(c, {}, "stop"))
    out.append("data: [DONE]\n\n")
    return "".join(out)


def chat_prefix(c: str) -> list[str]:
    return [chunk(c, {"role": "assistant", "content": ""})] + [
        chunk(c, {"content": d}) for d in TEXT[:5]
    ]


def chat_error() -> str:
    err = {
        "error": {
            "message": "The server had an error while processing your request.",
            "type": "server_error",
            "param": None,
            "code": None,
        }
    }
    return "".join(chat_prefix("chatcmpl-03")) + sse(None, err)


def chat_cut() -> str:
    return "".join(chat_prefix("chatcmpl-04")) + "#CUT\n\n"


def chat_short() -> str:
    return "".join(chat_prefix("chatcmpl-07"))  # ends cleanly, without a finish_reason


def chat_stall() -> str:
    return "".join(chat_prefix("chatcmpl-05")) + "#STALL\n\n"


def chat_text() -> str:
    c = "chatcmpl-06"
    out = chat_prefix(c) + [chunk(c, {"content": d}) for d in TEXT[5:10]]
    out.append(chunk(c, {}, "stop"))
    out.append("data: [DONE]\n\n")
    return "".join(out)


def a_ev(t: str, **body: object) -> str:
    return sse(t, {"type": t, **body})


def messages_tools() -> str:
    msg = {
        "id": "msg_01A",
        "type": "message",
        "role": "assistant",
        "content": [],
        "model": "claude-sonnet-4-5-20250929",
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {
            "input_tokens": 472,
            "output_tokens": 2,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        },
    }
    out = [a_ev("message_start", message=msg), a_ev("ping")]
    out.append(
        a_ev(
            "content_block_start",
            index=0,
            content_block={"type": "thinking", "thinking": "", "signature": ""},
        )
    )
    out += [
        a_ev("content_block_delta", index=0, delta={"type": "thinking_delta", "thinking": d})
        for d in REASONING
    ]
    out.append(
        a_ev(
            "content_block_delta",
            index=0,
            delta={"type": "signature_delta", "signature": "EqQBCgIYAhIM1gbcDa9GJwZA"},
        )
    )
    out.append(a_ev("content_block_stop", index=0))
    out.append(a_ev("content_block_start", index=1, content_block={"type": "text", "text": ""}))
    for i, d in enumerate(TEXT):
        if i == 20:
            out.append("#GATE\n\n")
        out.append(a_ev("content_block_delta", index=1, delta={"type": "text_delta", "text": d}))
    out.append(a_ev("content_block_stop", index=1))
    out.append(
        a_ev(
            "content_block_start",
            index=2,
            content_block={
                "type": "tool_use",
                "id": "toolu_01T1x",
                "name": "get_weather",
                "input": {},
            },
        )
    )
    out += [
        a_ev("content_block_delta", index=2, delta={"type": "input_json_delta", "partial_json": d})
        for d in ["", *ARGS]
    ]
    out.append(a_ev("content_block_stop", index=2))
    out.append(
        a_ev(
            "message_delta",
            delta={"stop_reason": "tool_use", "stop_sequence": None},
            usage={"output_tokens": 89},
        )
    )
    out.append(a_ev("message_stop"))
    return "".join(out)


def messages_error() -> str:
    msg = {
        "id": "msg_01B",
        "type": "message",
        "role": "assistant",
        "content": [],
        "model": "claude-sonnet-4-5-20250929",
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": 10, "output_tokens": 1},
    }
    out = [
        a_ev("message_start", message=msg),
        a_ev("content_block_start", index=0, content_block={"type": "text", "text": ""}),
    ]
    out += [
        a_ev("content_block_delta", index=0, delta={"type": "text_delta", "text": d})
        for d in TEXT[:5]
    ]
    out.append(
        sse(
            "error",
            {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
        )
    )
    return "".join(out)


def agent_loop() -> str:
    return chat_tools()  # the model calls two tools…


def agent_loop_2() -> str:
    return chat_text()  # …then answers with their results


def main() -> None:
    HERE.mkdir(exist_ok=True)
    for fn in (
        responses,
        responses_error,
        chat_tools,
        chat_reasoning,
        chat_error,
        chat_cut,
        chat_stall,
        chat_short,
        chat_text,
        messages_tools,
        messages_error,
        agent_loop,
        agent_loop_2,
        agents_run,
        agents_run_2,
    ):
        (HERE / f"{fn.__name__.replace('_2', '.2')}.sse").write_text(fn())


if __name__ == "__main__":
    main()
