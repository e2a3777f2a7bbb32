import { sql } from 'drizzle-orm'
import type { Db } from '../db/client.js'
import { rowsOf } from '../db/rows.js'
import { closedHorizon } from './horizon.js'

// The journal, entry by entry, for exports: read in keyset pages of whole
// transactions (never all at once), up to the journal's closed horizon
// taken when the export starts. Every transaction that committed before the
// export started is in it (if its posting time is in range), none that is
// still in flight, and no transaction is ever cut between two pages: the
// export is the same whatever is posted while it streams.

export interface JournalExportRow {
  transactionId: string
  entryId: string
  /** RFC 3339 UTC with microseconds: the transaction's posting time (its entries' too). */
  postedAt: string
  kind: string
  idempotencyKey: string
  accountCode: string
  direction: 'debit' | 'credit'
  /** Decimal strings: bigints, exact. */
  amount: string
  unit: string
  balanceAfter: string
}

export const JOURNAL_EXPORT_COLUMNS = [
  'transactionId',
  'entryId',
  'postedAt',
  'kind',
  'idempotencyKey',
  'accountCode',
  'direction',
  'amount',
  'unit',
  'balanceAfter',
] as const satisfies readonly (keyof JournalExportRow)[]

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
      select min(id)::text as lo, max(id)::text as hi from ledger_transactions
       where id <= ${horizon}
         and posted_at >= coalesce(${range.from ?? null}::timestamptz, '-infinity')
         and posted_at < coalesce(${range.to ?? null}::timestamptz, 'infinity')`),
  )
  return row?.lo && row.hi ? [BigInt(row.lo), BigInt(row.hi)] : null
}

/** The export's rows, a page at a time, in transaction id then entry id order. */
export async function* journalExportPages(
  db: Db,
  range: JournalExportRange,
  horizon: bigint,
): AsyncGenerator<JournalExportRow[]> {
  const bounds = await idBounds(db, range, horizon)
  if (!bounds) return
  const [lo, hi] = bounds
  const from = range.from ?? null
  const to = range.to ?? null
  let after = lo - 1n
  for (;;) {
    const rows = rowsOf<{
      transaction_id: string
      entry_id: string | null
      posted_at: string
      kind: string
      idempotency_key: string
      account_code: string
      direction: 'debit' | 'credit'
      amount: string
      unit: string
      balance_after: string
      page_last: string
    }>(
      await db.execute(sql`
        with page as (
          select t.id, t.kind, t.idempotency_key, t.posted_at
            from ledger_transactions t
           where t.id > ${after} and t.id <= ${hi}
             and t.posted_at >= coalesce(${from}::timestamptz, '-infinity')
             and t.posted_at < coalesce(${to}::timestamptz, 'infinity')
           order by t.id
           limit ${TRANSACTIONS_PER_PAGE}
        )
        select p.id::text as transaction_id, e.id::text as entry_id,
               to_char(p.posted_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') as posted_at,
               p.kind, p.idempotency_key, a.code as account_code, e.direction, e.amount::text, e.unit,
               e.balance_after::text, (select max(id) from page)::text as page_last
          from page p
          left join ledger_entries e on e.transaction_id = p.id
          left join ledger_accounts a on a.id = e.account_id
         order by p.id, e.id`),
    )
    const [firstRow] = rows
    if (!firstRow) return
    yield rows.flatMap((r) =>
      r.entry_id === null
        ? []
        : [
            {
              transactionId: r.transaction_id,
              entryId: r.entry_id,
              postedAt: r.posted_at,
              kind: r.kind,
              idempotencyKey: r.idempotency_key,
              accountCode: r.account_code,
              direction: r.direction,
              amount: r.amount,
              unit: r.unit,
              balanceAfter: r.balance_after,
            },
          ],
    )
    after = BigInt(firstRow.page_last)
  }
}
