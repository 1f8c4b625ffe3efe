"""The Python client: reconnects, resumes, verifies."""

from ..errors import ConnectionLost, RequestRefused
from .client import (
    Client,
    ConnectionEvent,
    LiveStream,
    Stream,
    default_should_retry,
    stream_answer,
)
from .response import (
    Answer,
    DataChunk,
    JsonFragment,
    PartEnded,
    PartResult,
    PartStarted,
    StreamEnded,
    StreamEvent,
    TextDelta,
    ToolCall,
    parse_partial_json,
)

__all__ = [
    "Answer",
    "Client",
    "ConnectionEvent",
    "ConnectionLost",
    "DataChunk",
    "JsonFragment",
    "LiveStream",
    "PartEnded",
    "PartResult",
    "PartStarted",
    "RequestRefused",
    "Stream",
    "StreamEnded",
    "StreamEvent",
    "TextDelta",
    "ToolCall",
    "default_should_retry",
    "parse_partial_json",
    "stream_answer",
]
