import { type SQL, sql } from 'drizzle-orm'
import type { Db, DbOrTx } from '../db/client.js'
import { rowsOf } from '../db/rows.js'
import { type AccountType, normalSide } from '../ledger/index.js'
import { type AccountHead, postedAtOrBefore } from './journal.js'

// The trial balance: every account's debits, credits and balance as of an
// instant, and per unit the totals, in which debits equal credits.
//
// How, on one consistent snapshot (a repeatable-read, read-only transaction):
//
// - as of now (or of any instant at or after the last posting): the cached
//   totals on the account rows, which the database keeps with every entry.
//   One scan of ledger_accounts; no entry is read.
// - as of a past instant, whichever side of it holds fewer entries:
//   - 'sum-before': sum the entries posted at or before it;
//   - 'subtract-after': the cached totals minus the entries posted after it.
//   ledger_entries_posted_at_brin (a BRIN index: a few kilobytes, nearly free
//   to keep up on an append-only table whose rows arrive in time order) lets
//   either scan read only the blocks of its side of the instant. Which side is
//   smaller is estimated from where the instant falls between the first and
//   the last posting (two probes of ledger_transactions_posted_at_idx).
//
// Lines cost time in proportion to the number of accounts (a user has a
// wallet, a creator earnings too): they are read only when asked for. Totals
// alone aggregate in the database, per unit, and come back as a few rows.
//
// Accounts without an entry as of the instant are left out (their line would
// be all zeros); `ledgerAccounts` lists the whole chart.

export type TrialBalanceMethod = 'cached' | 'sum-before' | 'subtract-after' | 'empty'

export interface TrialBalanceLine {
  account: AccountHead
  debits: bigint
  credits: bigint
  /** On the account's normal side: debits - credits for assets and expenses, credits - debits otherwise. */
  balance: bigint
}

export interface TrialBalanceTotal {
  currency: string
  debits: bigint
  credits: bigint
}

export interface TrialBalance {
  /** The instant the balance is as of: the one asked for, or the snapshot's time when none (or a later one) was. */
  asOf: string
  /** In account code order; empty when not asked for (`lines: false`). */
  lines: TrialBalanceLine[]
  /** Per unit (COIN first, then currencies in code order). */
  totals: TrialBalanceTotal[]
  /** How it was computed (for tests and EXPLAIN work; not in the API). */
  method: TrialBalanceMethod
}

export interface TrialBalanceOptions {
  /** Read every account's line (default), or only the per-unit totals. */
  lines?: boolean
  /** Force a method for a past instant (tests compare them); chosen by cost otherwise. */
  method?: 'sum-before' | 'subtract-after'
}

/** Memory for aggregating and sorting per account (PostgreSQL's default 4 MB spills to disk at ~50k accounts). */
const AGGREGATION_WORK_MEM = '64MB'

export function trialBalance(
  db: Db,
  asOf: Date | null,
  options: TrialBalanceOptions = {},
): Promise<TrialBalance> {
  return db.transaction((tx) => trialBalanceIn(tx, asOf, options), {
    isolationLevel: 'repeatable read',
    accessMode: 'read only',
  })
}

/** The trial balance inside a caller's (repeatable-read) transaction. */
export async function trialBalanceIn(
  tx: DbOrTx,
  asOf: Date | null,
  options: TrialBalanceOptions = {},
): Promise<TrialBalance> {
  const withLines = options.lines ?? true
  await tx.execute(sql.raw(`set local work_mem = '${AGGREGATION_WORK_MEM}'`))
  if (asOf === null) {
    return { asOf: await snapshotTime(tx), ...(await fromCached(tx, withLines)), method: 'cached' }
  }
  const [where] = rowsOf<{
    now: string
    future: boolean
    any_by: boolean
    after_last: boolean
    before_is_shorter: boolean
  }>(
    await tx.execute(sql`
      select clock_timestamp()::text as now,
             ${at(asOf)} >= clock_timestamp() as future,
             exists (select 1 from ledger_transactions t where ${postedAtOrBefore(sql`t.posted_at`, asOf)}) as any_by,
             coalesce(${postedAtOrBefore(sql`s.last`, asOf)}, true) as after_last,
             coalesce(${at(asOf)} - s.first <= s.last - ${at(asOf)}, true) as before_is_shorter
        from (select (select posted_at from ledger_transactions order by posted_at limit 1) as first,
                     (select posted_at from ledger_transactions order by posted_at desc limit 1) as last) s`),
  )
  if (!where) throw new Error('trial balance: no answer from the database')
  // An instant not yet reached: as of now, and it says so.
  if (where.future) return { asOf: where.now, ...(await fromCached(tx, withLines)), method: 'cached' }
  const asOfText = asOf.toISOString()
  if (!where.any_by) return { asOf: asOfText, lines: [], totals: [], method: 'empty' }
  // Nothing posted after the instant: the cached totals are exactly its balance.
  if (options.method === undefined && where.after_last) {
    return { asOf: asOfText, ...(await fromCached(tx, withLines)), method: 'cached' }
  }
  // Postings are roughly steady in time: the side of the instant with less time has fewer entries to read.
  const method = options.method ?? (where.before_is_shorter ? 'sum-before' : 'subtract-after')
  const result =
    method === 'sum-before' ? await sumBefore(tx, asOf, withLines) : await subtractAfter(tx, asOf, withLines)
  return { asOf: asOfText, ...result, method }
}

async function snapshotTime(tx: DbOrTx): Promise<string> {
  const [row] = rowsOf<{ now: string }>(await tx.execute(sql`select clock_timestamp()::text as now`))
  return row?.now ?? new Date().toISOString()
}

const at = (instant: Date): SQL => sql`${instant.toISOString()}::timestamptz`

interface Book {
  lines: TrialBalanceLine[]
  totals: TrialBalanceTotal[]
}

/**
 * From a subquery of per-account amounts (`account_id`, `debits`, `credits`,
 * and the account's `code`, `name`, `type`, `unit`): the lines in code order,
 * or only the per-unit totals.
 */
async function bookOf(tx: DbOrTx, perAccount: SQL, withLines: boolean): Promise<Book> {
  if (!withLines) {
    const totals = rowsOf<{ unit: string; debits: string; credits: string }>(
      await tx.execute(sql`
        select p.unit, sum(p.debits)::text as debits, sum(p.credits)::text as credits
          from (${perAccount}) p group by p.unit`),
    ).map((r) => ({ currency: r.unit, debits: BigInt(r.debits), credits: BigInt(r.credits) }))
    return { lines: [], totals: sortUnits(totals) }
  }
  const rows = rowsOf<LineRowRaw>(
    await tx.execute(sql`
      select p.account_id::text as id, p.code, p.name, p.type, p.unit,
             p.debits::text as debits, p.credits::text as credits
        from (${perAccount}) p
       order by p.code`),
  )
  const lines = rows.map((r): TrialBalanceLine => {
    const debits = BigInt(r.debits)
    const credits = BigInt(r.credits)
    return {
      account: { id: BigInt(r.id), code: r.code, name: r.name, type: r.type, unit: r.unit },
      debits,
      credits,
      balance: normalSide(r.type) === 'debit' ? debits - credits : credits - debits,
    }
  })
  return { lines, totals: totalsOf(lines) }
}

interface LineRowRaw {
  id: string
  code: string
  name: string
  type: AccountType
  unit: string
  debits: string
  credits: string
}

function fromCached(tx: DbOrTx, withLines: boolean): Promise<Book> {
  return bookOf(
    tx,
    sql`select a.id as account_id, a.code, a.name, a.type, a.unit,
               a.debits_total as debits, a.credits_total as credits
          from ledger_accounts a
         where a.debits_total > 0 or a.credits_total > 0`,
    withLines,
  )
}

function sumBefore(tx: DbOrTx, asOf: Date, withLines: boolean): Promise<Book> {
  return bookOf(
    tx,
    sql`select a.id as account_id, a.code, a.name, a.type, a.unit, s.debits, s.credits
          from (select e.account_id,
                       coalesce(sum(e.amount) filter (where e.direction = 'debit'), 0) as debits,
                       coalesce(sum(e.amount) filter (where e.direction = 'credit'), 0) as credits
                  from ledger_entries e
                 where ${postedAtOrBefore(sql`e.posted_at`, asOf)}
                 group by e.account_id) s
          join ledger_accounts a on a.id = s.account_id`,
    withLines,
  )
}

function subtractAfter(tx: DbOrTx, asOf: Date, withLines: boolean): Promise<Book> {
  return bookOf(
    tx,
    sql`select * from (
          select a.id as account_id, a.code, a.name, a.type, a.unit,
                 a.debits_total - coalesce(s.debits, 0) as debits,
                 a.credits_total - coalesce(s.credits, 0) as credits
            from ledger_accounts a
            left join (select e.account_id,
                              coalesce(sum(e.amount) filter (where e.direction = 'debit'), 0) as debits,
                              coalesce(sum(e.amount) filter (where e.direction = 'credit'), 0) as credits
                         from ledger_entries e
                        where not (${postedAtOrBefore(sql`e.posted_at`, asOf)})
                        group by e.account_id) s on s.account_id = a.id
           where a.debits_total > 0 or a.credits_total > 0) l
         where l.debits > 0 or l.credits > 0`,
    withLines,
  )
}

/** Per unit, the sum of the lines' debits and credits. */
export function totalsOf(lines: readonly TrialBalanceLine[]): TrialBalanceTotal[] {
  const byUnit = new Map<string, TrialBalanceTotal>()
  for (const line of lines) {
    const unit = line.account.unit
    let total = byUnit.get(unit)
    if (!total) {
      total = { currency: unit, debits: 0n, credits: 0n }
      byUnit.set(unit, total)
    }
    total.debits += line.debits
    total.credits += line.credits
  }
  return sortUnits([...byUnit.values()])
}

/** COIN first, then currencies by code. */
function sortUnits(totals: TrialBalanceTotal[]): TrialBalanceTotal[] {
  const rank = (t: TrialBalanceTotal) => (t.currency === 'COIN' ? '' : t.currency)
  return totals.sort((a, b) => (rank(a) < rank(b) ? -1 : rank(a) > rank(b) ? 1 : 0))
}
