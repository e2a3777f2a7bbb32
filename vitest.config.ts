import { defineConfig } from 'vitest/config'

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // A PGlite instance takes seconds to start; PostgreSQL tests create a database per file.
    testTimeout: 60_000,
    hookTimeout: 120_000,
    // Two cores: two test files at a time.
    maxWorkers: 2,
    fileParallelism: true,
  },
})
