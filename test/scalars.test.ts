import { GraphQLObjectType, GraphQLSchema, graphql, Kind, parseValue, valueFromAST } from 'graphql'
import { describe, expect, it } from 'vitest'
import {
  AMOUNT_MAX,
  AmountScalar,
  DateTimeScalar,
  parseAmount,
  parseDateTime,
  serializeAmount,
  serializeDateTime,
} from '../src/graphql/scalars.js'

const literal = (source: string) => AmountScalar.parseLiteral(parseValue(source), undefined)

describe('Amount', () => {
  it('serializes bigints and safe integers as JSON numbers', () => {
    expect(serializeAmount(0n)).toBe(0)
    expect(serializeAmount(34_999n)).toBe(34_999)
    expect(serializeAmount(-5n)).toBe(-5)
    expect(serializeAmount(AMOUNT_MAX)).toBe(Number.MAX_SAFE_INTEGER)
    expect(serializeAmount(-AMOUNT_MAX)).toBe(-Number.MAX_SAFE_INTEGER)
    expect(serializeAmount(42)).toBe(42)
    // The postgres driver hands int8 over as a string when not mapped to bigint.
    expect(serializeAmount('1400')).toBe(1400)
  })

  it('refuses to serialize what a JSON number cannot carry exactly', () => {
    expect(() => serializeAmount(AMOUNT_MAX + 1n)).toThrow(/between/)
    expect(() => serializeAmount(-AMOUNT_MAX - 1n)).toThrow(/between/)
    expect(() => serializeAmount(1.5)).toThrow(/Amount cannot represent/)
    expect(() => serializeAmount(2 ** 53)).toThrow(/Amount cannot represent/)
    expect(() => serializeAmount(null)).toThrow(/Amount cannot represent/)
    expect(() => serializeAmount({})).toThrow(/Amount cannot represent/)
  })

  it('parses variables into bigints', () => {
    expect(parseAmount(100)).toBe(100n)
    expect(parseAmount(-1)).toBe(-1n)
    expect(parseAmount(Number.MAX_SAFE_INTEGER)).toBe(AMOUNT_MAX)
    expect(parseAmount('9007199254740991')).toBe(AMOUNT_MAX)
    expect(parseAmount('-42')).toBe(-42n)
  })

  it('rejects non-integers, out-of-range values and strings that are not integers', () => {
    expect(() => parseAmount(1.5)).toThrow('Amount must be a whole number, got 1.5')
    expect(() => parseAmount(Number.NaN)).toThrow('Amount must be a whole number, got NaN')
    expect(() => parseAmount(Number.POSITIVE_INFINITY)).toThrow(/whole number/)
    expect(() => parseAmount(2 ** 53)).toThrow(
      'Amount must be between -(2^53-1) and 2^53-1, got 9007199254740992',
    )
    expect(() => parseAmount('9007199254740992')).toThrow(/between/)
    expect(() => parseAmount('123456789012345678901234567890')).toThrow(/between/)
    expect(() => parseAmount('12.5')).toThrow('Amount must be a whole number, got the string "12.5"')
    expect(() => parseAmount('1e3')).toThrow(/whole number/)
    expect(() => parseAmount(' 12')).toThrow(/whole number/)
    expect(() => parseAmount('')).toThrow(/whole number/)
    expect(() => parseAmount(true)).toThrow('Amount must be a whole number, got boolean')
    expect(() => parseAmount(null)).toThrow('Amount must be a whole number, got null')
  })

  it('parses literals: integers and integer strings only', () => {
    expect(literal('70')).toBe(70n)
    expect(literal('-70')).toBe(-70n)
    expect(literal('"17500"')).toBe(17_500n)
    expect(literal('9007199254740991')).toBe(AMOUNT_MAX)
    expect(() => literal('9007199254740992')).toThrow(/between/)
    expect(() => literal('1.0')).toThrow('Amount must be a whole number, got 1.0')
    expect(() => literal('"abc"')).toThrow(/whole number/)
    expect(() => literal('true')).toThrow('Amount must be a whole number, got a boolean literal')
    expect(() => literal('[1]')).toThrow(/whole number/)
  })

  it('carries the clear message through a GraphQL request', async () => {
    const schema = new GraphQLSchema({
      query: new GraphQLObjectType({
        name: 'Query',
        fields: {
          echo: {
            type: AmountScalar,
            args: { amount: { type: AmountScalar } },
            resolve: (_root, args: { amount: bigint }) => args.amount * 2n,
          },
        },
      }),
    })
    const ok = await graphql({
      schema,
      source: 'query ($a: Amount) { echo(amount: $a) }',
      variableValues: { a: 21 },
    })
    expect(ok).toEqual({ data: { echo: 42 } })
    const bad = await graphql({
      schema,
      source: 'query ($a: Amount) { echo(amount: $a) }',
      variableValues: { a: 0.5 },
    })
    expect(bad.errors?.[0]?.message).toContain('Amount must be a whole number, got 0.5')
    const badLiteral = await graphql({ schema, source: '{ echo(amount: 2.5) }' })
    expect(badLiteral.errors?.[0]?.message).toContain('Amount must be a whole number, got 2.5')
  })
})

describe('DateTime', () => {
  it('serializes Dates as RFC 3339 UTC', () => {
    expect(serializeDateTime(new Date(Date.UTC(2026, 10, 25, 22, 15, 30, 123)))).toBe(
      '2026-11-25T22:15:30.123Z',
    )
    expect(() => serializeDateTime(new Date('nope'))).toThrow(/invalid Date/)
  })

  it('serializes PostgreSQL timestamptz strings in UTC, keeping microseconds', () => {
    expect(serializeDateTime('2026-11-25 22:15:30.123456+00')).toBe('2026-11-25T22:15:30.123456Z')
    expect(serializeDateTime('2026-11-25 23:15:30.1+01')).toBe('2026-11-25T22:15:30.100Z')
    expect(serializeDateTime('2026-11-25 17:45:30-04:30')).toBe('2026-11-25T22:15:30.000Z')
    expect(serializeDateTime('2026-11-26T00:15:30.000001+0200')).toBe('2026-11-25T22:15:30.000001Z')
    expect(serializeDateTime('2026-11-25T22:15:30Z')).toBe('2026-11-25T22:15:30.000Z')
    // Crossing midnight and a year boundary through the offset.
    expect(serializeDateTime('2027-01-01 01:00:00+02')).toBe('2026-12-31T23:00:00.000Z')
  })

  it('refuses to serialize what is not a timestamp', () => {
    expect(() => serializeDateTime('yesterday')).toThrow(/cannot represent/)
    expect(() => serializeDateTime('2026-11-25')).toThrow(/cannot represent/)
    expect(() => serializeDateTime(1_764_108_930_000)).toThrow(/type number/)
  })

  it('parses RFC 3339 with an offset into a Date', () => {
    expect(parseDateTime('2026-11-25T22:15:30Z').toISOString()).toBe('2026-11-25T22:15:30.000Z')
    expect(parseDateTime('2026-11-25T22:15:30.5Z').toISOString()).toBe('2026-11-25T22:15:30.500Z')
    expect(parseDateTime('2026-11-25t23:15:30.123456+01:00').toISOString()).toBe('2026-11-25T22:15:30.123Z')
    expect(parseDateTime('0001-01-01T00:00:00Z').toISOString()).toBe('0001-01-01T00:00:00.000Z')
    expect(parseDateTime('2028-02-29T12:00:00-08:00').toISOString()).toBe('2028-02-29T20:00:00.000Z')
  })

  it('rejects strings that are not RFC 3339 date-times with an offset', () => {
    for (const bad of [
      '2026-11-25',
      '2026-11-25T22:15:30',
      '2026-11-25 22:15:30Z',
      '2026-02-30T00:00:00Z',
      '2026-13-01T00:00:00Z',
      '2026-11-25T24:00:00Z',
      '2026-11-25T22:60:00Z',
      '2026-11-25T22:15:30+24:00',
      'Wed, 25 Nov 2026 22:15:30 GMT',
      '',
    ]) {
      expect(() => parseDateTime(bad), bad).toThrow(/must be an RFC 3339 date-time/)
    }
    expect(() => parseDateTime(1_764_108_930_000)).toThrow('DateTime must be an RFC 3339 string, got number')
  })

  it('parses string literals only', () => {
    const date = valueFromAST(parseValue('"2026-11-25T22:15:30Z"'), DateTimeScalar) as Date
    expect(date.toISOString()).toBe('2026-11-25T22:15:30.000Z')
    expect(() => DateTimeScalar.parseLiteral({ kind: Kind.INT, value: '1' }, undefined)).toThrow(
      'DateTime must be an RFC 3339 string, got an int literal',
    )
  })
})
