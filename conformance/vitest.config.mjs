import { defineConfig } from "vitest/config"

export default defineConfig({
  test: {
    include: ["suite.test.mjs"],
    root: import.meta.dirname,
    // the suite's default 5 s is tight for its client-side checks (100k expect()
    // calls in one test) on a loaded CI machine; tests with their own limit keep it
    testTimeout: 20000,
  },
})
