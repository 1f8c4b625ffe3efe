// A representative subset of client.test.mjs (its CORE_SUBSET) with the core's Client
// (`unbroken-client/core`, dist/core.js: no plugin; its own event and error classes):
// a verified stream through cuts and reconnects (URL rotation, the reconnect budget, a
// retry_after floor, silence, freeze/wake, a reload's restore, typed errors, cancel,
// join/read) needs nothing opt-in. The whole file runs on the full Client.
globalThis.UB_TEST_CORE = true;
const { CORE_SUBSET, coreRan } = await import("./client.test.mjs");
const { deepStrictEqual } = await import("node:assert/strict");
deepStrictEqual([...coreRan], CORE_SUBSET, "every test of the subset is in client.test.mjs");
