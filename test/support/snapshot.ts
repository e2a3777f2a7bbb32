import { sql } from 'drizzle-orm'
import type { Db } from '../../src/db/client.js'
import { rowsOf } from '../../src/db/rows.js'

// A fingerprint of everything the application stores: for each table of the
// public schema, its row count and a hash of all its rows. Two equal
// snapshots mean nothing was written in between (balances, ledger, catalog,
// users, streams...), whatever tables later issues add.

export type Snapshot = Record<string, string>

export async function tablesOf(db: Db): Promise<string[]> {
  const rows = rowsOf<{ name: string }>(
    await db.execute(
      sql`select tablename::text as name from pg_tables where schemaname = 'public' order by 1`,
    ),
  )
  return rows.map((r) => r.name)
}

/** `table → "<count> rows <md5 of its rows>"`, for every table of the public schema. */
export async function snapshot(db: Db, tables?: string[]): Promise<Snapshot> {
  const names = tables ?? (await tablesOf(db))
  if (names.length === 0) return {}
  const columns = names.map(
    (t) =>
      `(select count(*)::text || ' rows ' || coalesce(md5(string_agg(x::text, '|' order by x::text)), '-') from "${t}" x) as "${t}"`,
  )
  const [row] = rowsOf<Snapshot>(await db.execute(sql.raw(`select ${columns.join(', ')}`)))
  return row ?? {}
}
