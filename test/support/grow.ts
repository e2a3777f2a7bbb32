import postgres from 'postgres'

// Shows the planner large tables, cheaply: rows inserted by a statement
// that fails on its last row stay in the table's pages and indexes (dead,
// until a vacuum). With no statistics (no ANALYZE yet: autovacuum off or
// behind, or PGlite, which has none), the planner sizes a table by its pages
// and guesses the rest, as it did on the benchmark's grown ledger
// (test/ledger/plans.test.ts).

export interface Growth {
  /** An INSERT … SELECT … FROM generate_series(1, n) g whose last row breaks a constraint. */
  insert: string
  /** The error the last row raises (nothing else may fail it). */
  error: RegExp
}

export async function growForPlanner(url: string, growths: Growth[]): Promise<void> {
  const client = postgres(url, { max: 1, onnotice: () => {} })
  try {
    for (const { insert, error } of growths) {
      const failed = await client.unsafe(insert).then(
        () => undefined,
        (e: Error) => e,
      )
      if (!failed || !error.test(failed.message))
        throw new Error(
          `growForPlanner: expected ${error} from ${insert.trim().split('\n')[0]}, got ${failed}`,
        )
    }
  } finally {
    await client.end()
  }
}

/**
 * The ledger's transactions and entries as large as `transactions`
 * transactions (three entries each) to the planner. Needs one account.
 */
export function ledgerGrowth(transactions: number): Growth[] {
  const entries = 3 * transactions
  return [
    {
      insert: `
        insert into ledger_transactions (idempotency_key, request_hash, kind, posted_at)
        select 'grown-' || g, '', case when g = ${transactions} then '-' else 'adjustment' end, now()
          from generate_series(1, ${transactions}) g`,
      error: /ledger_transactions_kind_format/,
    },
    {
      insert: `
        insert into ledger_entries (transaction_id, account_id, direction, amount, unit, account_seq, balance_after, posted_at)
        select 1, (select min(id) from ledger_accounts), 'debit', case when g = ${entries} then 0 else 1 end, 'COIN',
               1000000000 + g, 0, now()
          from generate_series(1, ${entries}) g`,
      error: /ledger_entries_amount_positive/,
    },
  ]
}

export interface Reads {
  /** Rows read by scans plus index entries read, over all the database's tables and indexes. */
  total: number
  byRelation: Record<string, number>
}

/**
 * The rows and index entries read in the database so far, with every other
 * session's share in: those sessions are ended first (pg_terminate_backend),
 * because a backend sends its statistics when it exits, while a live one
 * holds them back for up to 10 s (PostgreSQL 15). Pools reconnect on their
 * next statement; end the sessions whose plans matter after they ran.
 */
export async function readsSoFar(url: string): Promise<Reads> {
  const client = postgres(url, { max: 1, onnotice: () => {} })
  try {
    const others = () => client<{ n: number }[]>`
      select count(*)::int as n from pg_stat_activity
       where datname = current_database() and pid <> pg_backend_pid() and backend_type = 'client backend'`
    await client`
      select pg_terminate_backend(pid) from pg_stat_activity
       where datname = current_database() and pid <> pg_backend_pid() and backend_type = 'client backend'`
    for (const deadline = Date.now() + 10_000; (await others())[0]?.n !== 0; ) {
      if (Date.now() > deadline) throw new Error('readsSoFar: sessions still open 10 s after being ended')
      await new Promise((resolve) => setTimeout(resolve, 50))
    }
    const rows = await client<{ name: string; n: string }[]>`
      select relname as name, (coalesce(seq_tup_read, 0) + coalesce(idx_tup_fetch, 0))::text as n
        from pg_stat_user_tables
      union all
      select indexrelname, idx_tup_read::text from pg_stat_user_indexes`
    return {
      total: rows.reduce((sum, r) => sum + Number(r.n), 0),
      byRelation: Object.fromEntries(rows.map((r) => [r.name, Number(r.n)])),
    }
  } finally {
    await client.end()
  }
}

/** What was read between two readsSoFar, by relation (those read only). */
export function readsBetween(before: Reads, after: Reads): Record<string, number> {
  return Object.fromEntries(
    Object.entries(after.byRelation)
      .map(([name, n]) => [name, n - (before.byRelation[name] ?? 0)] as const)
      .filter(([, n]) => n > 0),
  )
}
