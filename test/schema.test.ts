import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'
import { printSchemaSdl } from '../src/graphql/schema.js'

const committed = fileURLToPath(new URL('../schema.graphql', import.meta.url))

describe('schema.graphql', () => {
  it('is what the code builds (run `npm run schema` and commit it when this fails)', () => {
    expect(readFileSync(committed, 'utf8')).toBe(printSchemaSdl())
  })
})
