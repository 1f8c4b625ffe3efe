"""The Python client: reconnects, resumes, verifies."""

from .client import (
    Client,
    ConnectionEvent,
    ConnectionLost,
    RequestRefused,
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
    parse_partial_json,
)

__all__ = [
    "Answer",
    "Client",
    "ConnectionEvent",
    "ConnectionLost",
    "DataChunk",
    "JsonFragment",
    "PartEnded",
    "PartResult",
    "PartStarted",
    "RequestRefused",
    "Stream",
    "StreamEnded",
    "StreamEvent",
    "TextDelta",
    "default_should_retry",
    "parse_partial_json",
    "stream_answer",
]
