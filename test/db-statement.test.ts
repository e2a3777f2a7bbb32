import { sql } from 'drizzle-orm'
import fc from 'fast-check'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { OneTrip } from '../src/db/client.js'
import { rowsOf } from '../src/db/rows.js'
import { arrayLiteral, toSql } from '../src/db/statement.js'
import { createTestDatabase, onPostgres, type TestDatabase } from './support/db.js'

// Prebuilt statements (src/db/statement.ts): text with numbered parameters,
// each column one array literal. What must hold: every value arrives in the
// database as it was, whatever its characters, through drizzle (PGlite and
// PostgreSQL) and through the one-trip writer (PostgreSQL).

let t: TestDatabase

// Read back as JSON text: the drivers parse arrays in their own ways (postgres.js reads NULL in a text[] as 'NULL').
const ROUND_TRIP =
  'select to_json($1::text[])::text as texts, to_json($2::bigint[]::text[])::text as numbers, $3::boolean as flag'

const readBack = (row: Record<string, unknown> | undefined) => ({
  texts: JSON.parse(String(row?.texts)),
  numbers: JSON.parse(String(row?.numbers)),
  flag: row?.flag,
})

/** Strings with the characters an array literal gives meaning to, and more (PostgreSQL text holds no NUL). */
const tricky = fc
  .oneof(
    fc.string({ unit: 'grapheme', maxLength: 12 }),
    fc.constantFrom(
      '',
      'NULL',
      'null',
      '"',
      '\\',
      '\\"',
      '{',
      '}',
      ',',
      ' a ',
      '{"a",b}',
      'a\\\\b',
      "it's",
      'ünïcødé 🎁',
    ),
    fc.string({ unit: fc.constantFrom('"', '\\', '{', '}', ',', ' ', 'a', 'N', 'U', 'L'), maxLength: 10 }),
  )
  .filter((s) => !s.includes('\0'))

describe('prebuilt statements', () => {
  beforeAll(async () => {
    t = await createTestDatabase()
  })
  afterAll(() => t?.drop())

  it('writes array literals as PostgreSQL reads them', () => {
    expect(arrayLiteral([])).toBe('{}')
    expect(arrayLiteral([1n, -2n, null, undefined])).toBe('{1,-2,NULL,NULL}')
    expect(arrayLiteral([3, -4, 0])).toBe('{3,-4,0}')
    expect(() => arrayLiteral([1.5])).toThrow(/not an integer/)
    expect(() => arrayLiteral([Number.NaN])).toThrow(/not an integer/)
    expect(arrayLiteral(['a', 'NULL', '', 'x"y', 'x\\y'])).toBe('{"a","NULL","","x\\"y","x\\\\y"}')
  })

  it('brings every string, bigint and null back unchanged through drizzle', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.option(tricky, { nil: null }), { maxLength: 8 }),
        fc.array(fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n }), { maxLength: 8 }),
        fc.boolean(),
        async (texts, numbers, flag) => {
          const statement = toSql({
            sql: ROUND_TRIP,
            params: [arrayLiteral(texts), arrayLiteral(numbers), flag],
          })
          const [row] = rowsOf<Record<string, unknown>>(await t.database.db.execute(statement))
          expect(readBack(row)).toEqual({ texts, numbers: numbers.map(String), flag })
        },
      ),
      { numRuns: 150 },
    )
  })

  it('repeats a placeholder used twice, and refuses one without a value', async () => {
    const [row] = rowsOf<{ a: string; b: string }>(
      await t.database.db.execute(
        toSql({ sql: 'select $1::text as a, $1::text || $2::text as b', params: ['x', 'y'] }),
      ),
    )
    expect(row).toEqual({ a: 'x', b: 'xy' })
    expect(() => toSql({ sql: 'select $2::text', params: ['x'] })).toThrow(/no value for \$2/)
  })

  it('passes drizzle statements through as they are', async () => {
    const statement = sql`select ${'a'}::text as a`
    expect(toSql(statement)).toBe(statement)
  })

  it.skipIf(!onPostgres)('brings them back unchanged through the one-trip writer', async () => {
    const oneTrip = t.database.oneTrip as OneTrip
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.option(tricky, { nil: null }), { maxLength: 8 }),
        fc.array(fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n }), { maxLength: 8 }),
        async (texts, numbers) => {
          const [rows] = await oneTrip([
            { sql: ROUND_TRIP, params: [arrayLiteral(texts), arrayLiteral(numbers), true] },
          ])
          expect(readBack(rows?.[0])).toEqual({ texts, numbers: numbers.map(String), flag: true })
        },
      ),
      { numRuns: 60 },
    )
  })
})
