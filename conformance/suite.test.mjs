// The Durable Streams server conformance suite, pointed at CONFORMANCE_TEST_URL (run.sh sets it).
import { runConformanceTests } from "@durable-streams/server-conformance-tests"

runConformanceTests({
  baseUrl: process.env.CONFORMANCE_TEST_URL,
  longPollTimeoutMs: Number(process.env.UNBROKEN_LONG_POLL ?? "2") * 1000,
})
