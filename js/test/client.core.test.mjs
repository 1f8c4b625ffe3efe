// Every test of client.test.mjs with the core's Client (`unbroken-client/core`,
// dist/core.js: no plugin; its own event and error classes): a full verified stream
// through cuts and reconnects (URL rotation, backoff, retry_after floors, silence,
// freeze/wake, a reload's restore, typed errors, cancel) needs nothing opt-in.
globalThis.UB_TEST_CORE = true;
await import("./client.test.mjs");
