import { GraphQLError, GraphQLScalarType, Kind, type ValueNode } from 'graphql'

// ---- Amount -----------------------------------------------------------------
//
// A whole number of the smallest step of a unit (a coin, a cent). Held as a
// bigint everywhere in the server; on the wire a JSON number, so it is limited
// to the integers a JSON/JS number represents exactly: ±(2^53 − 1). A value
// outside that range is refused rather than rounded.

export const AMOUNT_MAX = 2n ** 53n - 1n
export const AMOUNT_MIN = -AMOUNT_MAX

const INTEGER_STRING = /^-?\d{1,16}$/

function amountError(message: string): GraphQLError {
  return new GraphQLError(`Amount ${message}`, { extensions: { code: 'BAD_USER_INPUT' } })
}

function inAmountRange(value: bigint, shown: string): bigint {
  if (value > AMOUNT_MAX || value < AMOUNT_MIN) {
    throw amountError(`must be between -(2^53-1) and 2^53-1, got ${shown}`)
  }
  return value
}

function amountFromString(value: string): bigint {
  if (!INTEGER_STRING.test(value)) {
    // Long digit strings are out of range whatever they are; say so.
    if (/^-?\d+$/.test(value)) throw amountError(`must be between -(2^53-1) and 2^53-1, got ${value}`)
    throw amountError(`must be a whole number, got the string ${JSON.stringify(value.slice(0, 40))}`)
  }
  return inAmountRange(BigInt(value), value)
}

/** A client's value (a JSON number, or a string of digits) as a bigint; throws a clear error otherwise. */
export function parseAmount(value: unknown): bigint {
  switch (typeof value) {
    case 'bigint':
      return inAmountRange(value, value.toString())
    case 'number':
      if (!Number.isFinite(value) || !Number.isInteger(value)) {
        throw amountError(`must be a whole number, got ${value}`)
      }
      if (!Number.isSafeInteger(value)) {
        throw amountError(`must be between -(2^53-1) and 2^53-1, got ${value}`)
      }
      return BigInt(value)
    case 'string':
      return amountFromString(value)
    default:
      throw amountError(`must be a whole number, got ${value === null ? 'null' : typeof value}`)
  }
}

/** A server value as a JSON number; never rounds: out-of-range values are an error. */
export function serializeAmount(value: unknown): number {
  if (typeof value === 'number' && !Number.isSafeInteger(value)) {
    throw new GraphQLError(`Amount cannot represent ${value}: not a whole number in range`)
  }
  if (typeof value !== 'bigint' && typeof value !== 'number' && typeof value !== 'string') {
    throw new GraphQLError(`Amount cannot represent a value of type ${typeof value}`)
  }
  return Number(parseAmount(value))
}

/** 'BooleanValue' → 'a boolean literal', for messages. */
function describeLiteral(ast: ValueNode): string {
  const kind = ast.kind.replace(/Value$/, '').toLowerCase()
  return `${/^[aeiou]/.test(kind) ? 'an' : 'a'} ${kind} literal`
}

function parseAmountLiteral(ast: ValueNode): bigint {
  switch (ast.kind) {
    case Kind.INT:
      return amountFromString(ast.value)
    case Kind.FLOAT:
      throw amountError(`must be a whole number, got ${ast.value}`)
    case Kind.STRING:
      return amountFromString(ast.value)
    default:
      throw amountError(`must be a whole number, got ${describeLiteral(ast)}`)
  }
}

export const AmountScalar = new GraphQLScalarType<bigint, number>({
  name: 'Amount',
  description:
    'A whole number of the smallest step of a unit (a coin; a cent for USD). ' +
    'A JSON number between -(2^53-1) and 2^53-1.',
  serialize: serializeAmount,
  parseValue: parseAmount,
  parseLiteral: parseAmountLiteral,
})

// ---- DateTime ---------------------------------------------------------------
//
// Out: RFC 3339 in UTC ("2026-11-25T22:15:30.123456Z"), from a Date or from the
// string PostgreSQL returns for timestamptz columns read in `mode: 'string'`
// (which keeps microseconds; a Date would drop them). In: an RFC 3339 string
// with an explicit offset, as a Date (to the millisecond).

const RFC3339 = /^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$/
// PostgreSQL's ISO output: space or T, offset as +HH, +HHMM or +HH:MM.
const TIMESTAMP_LOOSE =
  /^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(\.\d{1,9})?([Zz]|[+-]\d{2}(?::?\d{2})?)$/

interface Instant {
  /** Whole seconds since the epoch, in milliseconds. */
  epochMs: number
  /** The fractional second as written, without the dot ('' when absent). */
  fraction: string
}

function dateTimeError(message: string): GraphQLError {
  return new GraphQLError(`DateTime ${message}`, { extensions: { code: 'BAD_USER_INPUT' } })
}

function offsetMinutes(offset: string): number {
  if (offset === 'Z' || offset === 'z') return 0
  const sign = offset.startsWith('-') ? -1 : 1
  const digits = offset.slice(1).replace(':', '')
  const hours = Number(digits.slice(0, 2))
  const minutes = digits.length > 2 ? Number(digits.slice(2, 4)) : 0
  if (hours > 23 || minutes > 59) return Number.NaN
  return sign * (hours * 60 + minutes)
}

function toInstant(value: string, pattern: RegExp): Instant | null {
  const m = pattern.exec(value)
  if (!m) return null
  const [year, month, day, hour, minute, second] = m.slice(1, 7).map(Number) as [
    number,
    number,
    number,
    number,
    number,
    number,
  ]
  const offset = offsetMinutes(m[8] as string)
  if (Number.isNaN(offset) || hour > 23 || minute > 59 || second > 59) return null
  // setUTCFullYear, unlike Date.UTC, does not map years 0-99 to 1900-1999.
  const date = new Date(0)
  date.setUTCFullYear(year, month - 1, day)
  date.setUTCHours(hour, minute, second, 0)
  // Rejects 2026-02-30 and friends, which Date would roll over.
  if (date.getUTCFullYear() !== year || date.getUTCMonth() !== month - 1 || date.getUTCDate() !== day) {
    return null
  }
  return { epochMs: date.getTime() - offset * 60_000, fraction: (m[7] ?? '').slice(1) }
}

function formatInstant({ epochMs, fraction }: Instant): string {
  const width = fraction.length <= 3 ? 3 : fraction.length <= 6 ? 6 : 9
  const seconds = new Date(epochMs).toISOString().slice(0, 19)
  return `${seconds}.${fraction.padEnd(width, '0')}Z`
}

/** A Date or a timestamp string as RFC 3339 UTC; keeps the fraction of a string (microseconds). */
export function serializeDateTime(value: unknown): string {
  if (value instanceof Date) {
    if (Number.isNaN(value.getTime())) throw new GraphQLError('DateTime cannot represent an invalid Date')
    return value.toISOString()
  }
  if (typeof value === 'string') {
    const instant = toInstant(value, TIMESTAMP_LOOSE)
    if (!instant) throw new GraphQLError(`DateTime cannot represent ${JSON.stringify(value.slice(0, 40))}`)
    return formatInstant(instant)
  }
  throw new GraphQLError(`DateTime cannot represent a value of type ${typeof value}`)
}

/** A client's RFC 3339 string (with Z or an offset) as a Date; sub-millisecond digits are dropped. */
export function parseDateTime(value: unknown): Date {
  if (typeof value !== 'string') {
    throw dateTimeError(`must be an RFC 3339 string, got ${value === null ? 'null' : typeof value}`)
  }
  const instant = toInstant(value, RFC3339)
  if (!instant) {
    throw dateTimeError(
      `must be an RFC 3339 date-time with an offset, e.g. "2026-11-25T22:15:30Z", got ${JSON.stringify(value.slice(0, 40))}`,
    )
  }
  return new Date(instant.epochMs + Number(instant.fraction.padEnd(3, '0').slice(0, 3)))
}

export const DateTimeScalar = new GraphQLScalarType<Date, string>({
  name: 'DateTime',
  description: 'An instant as an RFC 3339 string in UTC, e.g. "2026-11-25T22:15:30.123456Z".',
  serialize: serializeDateTime,
  parseValue: parseDateTime,
  parseLiteral: (ast) => {
    if (ast.kind !== Kind.STRING)
      throw dateTimeError(`must be an RFC 3339 string, got ${describeLiteral(ast)}`)
    return parseDateTime(ast.value)
  },
})
