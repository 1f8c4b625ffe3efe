// Read one stream with the official Durable Streams TypeScript client and print what it
// got as JSON: {"items": [...], "offset": "<last Stream-Next-Offset>"}.
// Usage: node read_agent.mjs <stream-url> <live: sse | long-poll | false> [offset]
// (tests/integration/http/test_ds_client.py reads unbroken agent answers with it)
import { stream } from "@durable-streams/client"

const [url, liveArg, offset] = process.argv.slice(2)
const live = liveArg === "false" ? false : liveArg
const res = await stream({ url, live, json: true, offset: offset ?? "-1", warnOnHttp: false })
const items = []
for await (const item of res.jsonStream()) items.push(item)
process.stdout.write(JSON.stringify({ items, offset: res.offset, closed: res.streamClosed ?? null }))
