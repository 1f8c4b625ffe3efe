// Reads an unbroken answer with the `ai` package's own client code: the
// DefaultChatTransport's reconnectToStream (useChat's resume: GET {api}/{chatId}/stream)
// and readUIMessageStream. argv: path of ai's index.js, api base, chat (stream) id, token.
// Prints "connected" once the response began, then the final UI message as JSON.
import { pathToFileURL } from "node:url";

const [aiPath, api, chatId, token] = process.argv.slice(2);
const { DefaultChatTransport, readUIMessageStream } = await import(pathToFileURL(aiPath).href);
const transport = new DefaultChatTransport({ api, headers: { Authorization: `Bearer ${token}` } });
const stream = await transport.reconnectToStream({ chatId });
if (stream === null) {
  console.log("null");
  process.exit(0);
}
console.log("connected");
let last;
for await (const message of readUIMessageStream({ stream })) last = message;
console.log(JSON.stringify(last));
