// Every test of client.test.mjs with the fake server speaking protocol v1 (the
// client offers v2 and v1; a v1 server picks v1).
globalThis.UB_TEST_VERSION = "v1";
await import("./client.test.mjs");
