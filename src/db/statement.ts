import { is, type Query, SQL, sql } from 'drizzle-orm'

// Statements the hot paths send once per batch, with every value in a few
// array parameters: their text is written once, with numbered parameters,
// and each column travels as one array literal. Building them costs a string
// join per column, where a drizzle template walks every chunk of the
// statement (sqlToQuery) and the driver escapes every array element again.

/** A statement as drizzle or as text with numbered parameters ($1, $2, …) and their values. */
export type Statement = SQL | Query

/**
 * The statement as a drizzle SQL (for `db.execute`, PGlite included): the
 * text between the placeholders as raw chunks, each placeholder as its value.
 * The text holds `$<digits>` only as placeholders (no dollar quoting).
 */
export function toSql(statement: Statement): SQL {
  if (is(statement, SQL)) return statement
  const { sql: text, params } = statement
  const chunks: SQL[] = []
  let from = 0
  for (const match of text.matchAll(/\$(\d+)/g)) {
    const index = Number(match[1]) - 1
    if (!(index >= 0 && index < params.length)) throw new Error(`statement: no value for $${match[1]}`)
    chunks.push(sql.raw(text.slice(from, match.index)), sql`${params[index]}`)
    from = (match.index as number) + match[0].length
  }
  chunks.push(sql.raw(text.slice(from)))
  return sql.join(chunks)
}

/**
 * A PostgreSQL array literal ('{…}') of the values, for a parameter cast to
 * an array type (`$1::bigint[]`, `$2::text[]`): strings quoted, with `"` and
 * `\` escaped; bigints and integers as they are; null as NULL.
 */
export function arrayLiteral(values: readonly (string | bigint | number | null | undefined)[]): string {
  let out = '{'
  for (let i = 0; i < values.length; i++) {
    if (i > 0) out += ','
    const value = values[i]
    if (value === null || value === undefined) out += 'NULL'
    else if (typeof value === 'string')
      // includes() is a plain search, many times faster than a regular expression on every string.
      out += `"${value.includes('"') || value.includes('\\') ? value.replace(ESCAPED, '\\$&') : value}"`
    else if (typeof value === 'bigint' || Number.isSafeInteger(value)) out += value.toString()
    else throw new Error(`arrayLiteral: ${value} is not an integer`)
  }
  return `${out}}`
}

const ESCAPED = /["\\]/g
