// Build: one ES module (dist/unbroken.js, no runtime dependency) and its types
// (dist/unbroken.d.ts over dist/types/). `npm run build`.
import { build } from "esbuild";
import { execFileSync } from "node:child_process";
import { existsSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

// (DIST: another output directory, e.g. to measure a change while tests read dist/)
const DIST = process.env.DIST ?? "dist";
// (only the types: the bundle is overwritten in place, so a page or a test run
// reading dist/unbroken.js during a rebuild never finds it missing)
rmSync(`${DIST}/types`, { recursive: true, force: true });
// every bundle: one minified ES module for any runtime
const ES_MODULE = { bundle: true, format: "esm", platform: "neutral", target: ["es2022"], minify: true };
// the core's bundles: private members (and @internal ones) are named `_x` and
// minified like locals; nothing outside a bundle may read a `_` property of it
// (protocol v1's codec is the page bundle's sibling file, dist/unbroken-v1.js: never bundled in)
const MANGLED = { ...ES_MODULE, mangleProps: /^_/, sourcemap: true, legalComments: "none", logLevel: "warning", external: ["./unbroken-v1.js", "./unbroken-blake2b.js"] };
// the page bundle also minifies the members of objects no page can reach (the
// sans-I/O session, its streams, the liveness rule, the reconnect schedule and the
// client's private state): never a frame field, an option, an event's field or
// anything public (dist/testing.js keeps these names for the tests; test/bundle.test.mjs
// checks the list against the public declarations and the frame fields)
const INTERNAL = [
  // ClientSession
  "byReq", "byStream", "ackEvery", "ackMin", "ackAfter", "batch", "liveness", "hbSeen", "startAttempts",
  "refreshAgreed", "streamsAgreed", "authExp", "refreshFailures", "refreshAttempts", "handles", "zlib",
  "framesOf", "afterWelcome", "connectionLost", "expectingFrames", "adopt", "resendStart", "serverError",
  "refreshFailed", "listStreams", "forget", "takeAcks", "heartbeatAcks", "afterMessage", "wire", "receive",
  "events2", "attach", "verify",
  // ClientStream, ConsumedCursor
  "verifier", "partKinds", "acked", "unackedBytes", "ackedAt", "carried", "began", "verified", "consumed", "since",
  // Liveness and its checks
  "heartbeat", "srtt", "rttvar", "lastRecv", "lag", "lagAtRecv", "pings", "pingN", "lastPingAt", "lastBulk",
  "lagAtBulk", "heard", "queueDelay", "connecting", "helloSent", "welcomed", "bytesHeard", "messageHeard",
  "rttSample", "awaitingPong", "limit", "pingLimit", "pingAge", "dead",
  "firstCheck", "wakeAt", "ahead", "lastAhead", "lagAtAhead", "eventsHeard", "bytesAhead",
  // Reconnects; Client's and Stream's private members
  "budget", "lost", "openStreams", "answered", "tokenValue", "supervise", "connection", "cancelledByUser",
  "lateWaits", "lateTimer", "lateDue", "lateTotal", "lateNow", "lateTick",
  // stream and session states, unavailable-log episodes, the MessagePack reader, the chain step's buffer
  "state", "outagePolicy", "outage", "metadataParts", "spell", "resendResume", "resumes", "ask", "inMs",
  "buf", "pos", "need", "str", "arrayHeader", "utf8", "array",
];
const page = await build({
  entryPoints: ["src/index.ts"],
  outfile: `${DIST}/unbroken.js`,
  ...MANGLED,
  mangleProps: new RegExp(`^(_.*|${INTERNAL.join("|")})$`),
  mangleCache: {},
});
// the core for apps built with a bundler (`unbroken-client/core`): the same, with
// the features not every app needs as opt-in imports (plugins.ts) its bundler leaves
// out when unused; the same chunks beside it, and each internal member minified to
// the same name as in unbroken.js (its mangleCache), so the core's functions
// (`streams(client)`, …) also work on a full client
await build({
  entryPoints: ["src/core.ts"],
  outfile: `${DIST}/core.js`,
  ...MANGLED,
  mangleProps: new RegExp(`^(_.*|${INTERNAL.join("|")})$`),
  mangleCache: page.mangleCache,
});
// protocol v1's codec: loaded by the page bundle from next to itself when a server
// speaks v1. It imports nothing (never ./unbroken.js: under a page's other URL for the
// core, unbroken.js?v=<hash>, that would be a second copy with other error classes):
// frames.ts's errors are v1-errors.ts's, the core's own classes given at load.
await build({
  entryPoints: ["src/v1.ts"],
  outfile: `${DIST}/unbroken-v1.js`,
  ...MANGLED,
  plugins: [
    {
      name: "core-errors",
      setup(b) {
        b.onResolve({ filter: /^\.\/errors\.js$/ }, () => ({ path: fileURLToPath(new URL("src/v1-errors.ts", import.meta.url)) }));
      },
    },
  ],
});
// BLAKE2b's JavaScript compression: loaded by the page bundle from next to itself
// only where WebAssembly is refused (it imports nothing)
await build({
  entryPoints: ["src/unbroken-blake2b.ts"],
  outfile: `${DIST}/unbroken-blake2b.js`,
  ...MANGLED,
});
// The files a page loads as they are (the page bundle and its on-demand chunks):
// minified again by terser, whose compression and choice of names gzip smaller than
// esbuild's (-0.54 kB gzip on unbroken.js); its source map maps to the sources
// still. Not the core (dist/core.js): an app's bundler minifies it again anyway
// (measured: no smaller in the app's bundle).
// (A node_modules from before terser was added: left as esbuild makes them, with a
// warning, until `npm ci`.)
const terser = await import("terser").catch(() => null);
if (terser === null) console.warn("build: terser is not installed (npm ci): the page bundle is left as esbuild makes it");
for (const file of terser === null ? [] : ["unbroken.js", "unbroken-v1.js", "unbroken-blake2b.js"]) {
  const path = `${DIST}/${file}`;
  const out = await terser.minify(readFileSync(path, "utf8").replace(/\n\/\/# sourceMappingURL=.*\n?$/, ""), {
    module: true,
    ecma: 2022,
    compress: { passes: 3 },
    sourceMap: { content: readFileSync(`${path}.map`, "utf8"), url: `${file}.map` },
  });
  writeFileSync(path, `${out.code}\n`);
  writeFileSync(`${path}.map`, out.map);
}
// tests, tools and benchmarks: everything, internals included (its own copy; the
// JavaScript BLAKE2b bundled in)
await build({
  entryPoints: ["src/testing.ts"],
  outfile: `${DIST}/testing.js`,
  ...MANGLED,
  external: ["./unbroken-v1.js"],
});
// the AI SDK transport: its own module, which imports nothing of the core at run
// time (it takes what it needs from the client it is given: core-key.ts)
await build({
  entryPoints: ["src/ai-sdk.ts"],
  outfile: `${DIST}/ai-sdk.js`,
  ...MANGLED,
  external: ["ai"],
});
// JSON Schema validation for the `validator` option: its own module, with
// @cfworker/json-schema (MIT) bundled in, so a page needs no import map and the
// core bundle does not grow. (A node_modules from before it was added: skipped with
// a warning, until `npm ci`.)
const haveSchemaLib = existsSync("node_modules/@cfworker/json-schema/package.json");
if (!haveSchemaLib) console.warn("build: @cfworker/json-schema is not installed (npm ci): dist/schema.js not built");
else await build({
  entryPoints: ["src/schema.ts"],
  outfile: `${DIST}/schema.js`,
  ...ES_MODULE,
  sourcemap: true,
  legalComments: "eof",
  banner: { js: "// unbroken-client/schema; includes @cfworker/json-schema (MIT, https://github.com/cfworker/cfworker)" },
  logLevel: "warning",
});
// (without the schema library its module is left out of the types too)
const tsconfig = haveSchemaLib ? "." : "tsconfig.noschema.json";
if (!haveSchemaLib) writeFileSync(tsconfig, JSON.stringify({ extends: "./tsconfig.json", exclude: ["src/schema.ts"] }));
try {
  execFileSync(process.execPath, ["node_modules/typescript/bin/tsc", "-p", tsconfig, "--outDir", `${DIST}/types`], { stdio: "inherit" });
} finally {
  if (!haveSchemaLib) rmSync(tsconfig);
}
writeFileSync(`${DIST}/unbroken.d.ts`, 'export * from "./types/index.js";\n');
writeFileSync(`${DIST}/core.d.ts`, 'export * from "./types/core.js";\n');
writeFileSync(`${DIST}/testing.d.ts`, 'export * from "./types/testing.js";\n');
writeFileSync(`${DIST}/ai-sdk.d.ts`, 'export * from "./types/ai-sdk.js";\n');
if (haveSchemaLib) writeFileSync(`${DIST}/schema.d.ts`, 'export * from "./types/schema.js";\n');
