import { type SQL, sql } from 'drizzle-orm'
import type { PgDialect } from 'drizzle-orm/pg-core'
import type { Db } from '../db/client.js'
import { rowsOf } from '../db/rows.js'
import { closedHorizon } from './horizon.js'

// The journal, entry by entry, for exports: read in keyset pages of whole
// transactions (never all at once), up to the journal's closed horizon
// taken when the export starts. Every transaction that committed before the
// export started is in it (if its posting time is in range), none that is
// still in flight, and no transaction is ever cut between two pages: the
// export is the same whatever is posted while it streams.
//
// PostgreSQL formats each page (one text value per page): the server only
// passes text through, a page at a time, so its memory and CPU do not grow
// with the rows.

export type JournalExportFormat = 'csv' | 'jsonl'

/** The columns, in order, with the same names in both formats. */
export const JOURNAL_EXPORT_COLUMNS = [
  'transaction_id',
  'entry_id',
  'posted_at',
  'kind',
  'idempotency_key',
  'account_code',
  'direction',
  'amount',
  'unit',
  'balance_after',
] as const

export interface JournalExportRange {
  /** Transactions posted at or after this instant (RFC 3339); unset: from the start. */
  from?: string
  /** Transactions posted before this instant (RFC 3339); unset: up to now. */
  to?: string
}

/** Transactions per page: a page is about three times as many entries. */
const TRANSACTIONS_PER_PAGE = 500

export class HorizonUnavailableError extends Error {
  override readonly name = 'HorizonUnavailableError'
}

/**
 * The closed horizon the export will stop at. Taken before the first byte
 * is sent, so that a failure is still an HTTP error, not a cut stream.
 */
export async function journalExportHorizon(db: Db): Promise<bigint> {
  const horizon = await closedHorizon(db)
  if (horizon === null) {
    throw new HorizonUnavailableError('database transactions still in flight did not finish in time')
  }
  return horizon
}

/** RFC 4180, in SQL: a field with a comma, a quote, CR or LF is quoted, its quotes doubled. */
const csvText = (column: string) =>
  `case when ${column} ~ '[",\\r\\n]' then '"' || replace(${column}, '"', '""') || '"' else ${column} end`

const UTC = `to_char(p.posted_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')`

/**
 * One line per entry. Numbers, the instant and the direction never need
 * quoting; every text field goes through csvText, whatever the constraints
 * on it say. Amounts in JSON are strings: exact, whatever their size.
 */
const LINE: Record<JournalExportFormat, SQL> = {
  csv: sql.raw(`concat_ws(',', p.id, e.id, ${UTC}, ${csvText('p.kind')}, ${csvText('p.idempotency_key')},
                  ${csvText(`coalesce(a.code, '')`)}, e.direction, e.amount, ${csvText('e.unit')}, e.balance_after) || E'\\r\\n'`),
  // Compact JSON, keys in column order; text through to_json (JSON string escaping).
  jsonl:
    sql.raw(`format('{"transaction_id":"%s","entry_id":"%s","posted_at":"%s","kind":%s,"idempotency_key":%s,'
                         '"account_code":%s,"direction":"%s","amount":"%s","unit":%s,"balance_after":"%s"}',
                         p.id, e.id, ${UTC}, to_json(p.kind), to_json(p.idempotency_key), coalesce(to_json(a.code)::text, 'null'),
                         e.direction, e.amount, to_json(e.unit), e.balance_after) || E'\\n'`),
}

/**
 * The id bounds of the transactions posted in a range: one pass over the
 * posting-time index, so that the pages then walk the primary key over the
 * range only, not over the whole journal.
 */
async function idBounds(
  db: Db,
  range: JournalExportRange,
  horizon: bigint,
): Promise<[bigint, bigint] | null> {
  if (range.from === undefined && range.to === undefined) return [1n, horizon]
  const [row] = rowsOf<{ lo: string | null; hi: string | null }>(
    await db.execute(sql`
      select min(id)::text as lo, max(id)::text as hi from (
        -- offset 0: keep min/max from walking the primary key past everything outside the range.
        select id from ledger_transactions
         where posted_at >= coalesce(${range.from ?? null}::timestamptz, '-infinity')
           and posted_at < coalesce(${range.to ?? null}::timestamptz, 'infinity')
        offset 0) in_range
       where id <= ${horizon}`),
  )
  return row?.lo && row.hi ? [BigInt(row.lo), BigInt(row.hi)] : null
}

/** The export's text, a page of whole transactions at a time, in transaction id then entry id order. */
export async function* journalExportPages(
  db: Db,
  format: JournalExportFormat,
  range: JournalExportRange,
  horizon: bigint,
): AsyncGenerator<string | Buffer> {
  const bounds = await idBounds(db, range, horizon)
  if (!bounds) return
  const [lo, hi] = bounds
  const from = range.from ?? null
  const to = range.to ?? null
  let after = lo - 1n
  for (;;) {
    const page = await readPage(
      db,
      sql`
        with page as (
          select t.id, t.kind, t.idempotency_key, t.posted_at
            from ledger_transactions t
           where t.id > ${after} and t.id <= ${hi}
             and t.posted_at >= coalesce(${from}::timestamptz, '-infinity')
             and t.posted_at < coalesce(${to}::timestamptz, 'infinity')
           order by t.id
           limit ${TRANSACTIONS_PER_PAGE}
        )
        select (select max(id) from page)::text as last,
               (select string_agg(${LINE[format]}, '' order by p.id, e.id)
                  from page p
                  join ledger_entries e on e.transaction_id = p.id
                  left join ledger_accounts a on a.id = e.account_id) as text`,
    )
    if (!page?.last) return
    if (page.text) yield page.text
    after = BigInt(page.last)
  }
}

/**
 * One page: its last transaction id, and its text. On PostgreSQL the text is
 * read as raw bytes (postgres.js `.raw()`) and goes to the response as it
 * came off the socket, never a JavaScript string: a whole export is hundreds
 * of MiB of page text, and as short-lived strings (decoded, then encoded
 * again) it is what raised the server's memory while exporting. PGlite has
 * no raw mode: strings there.
 */
async function readPage(db: Db, query: SQL): Promise<{ last: string | null; text: string | Buffer | null }> {
  const client = (db as unknown as { $client?: RawClient }).$client
  if (client && typeof client.unsafe === 'function') {
    const { sql: text, params } = (db as unknown as { dialect: PgDialect }).dialect.sqlToQuery(query)
    const [row] = await client.unsafe(text, params as never[], { prepare: true }).raw()
    return { last: row?.[0]?.toString('utf8') ?? null, text: row?.[1] ?? null }
  }
  const [row] = rowsOf<{ last: string | null; text: string | null }>(await db.execute(query))
  return { last: row?.last ?? null, text: row?.text ?? null }
}

/** The part of postgres.js used for raw pages. */
interface RawClient {
  unsafe(
    query: string,
    params: never[],
    options: { prepare: boolean },
  ): { raw(): Promise<(Buffer | null)[][]> }
}
