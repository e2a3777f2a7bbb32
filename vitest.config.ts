import { defineConfig } from 'vitest/config'

export default defineConfig({
  resolve: {
    // graphql 16 ships index.js (CommonJS) and index.mjs. Node loads the
    // former for the libraries in node_modules (Pothos, Yoga), Vite would give
    // our sources the latter: two graphql instances, and "Cannot use
    // GraphQLScalarType from another module or realm". One copy for all.
    alias: [{ find: /^graphql$/, replacement: 'graphql/index.js' }],
  },
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
