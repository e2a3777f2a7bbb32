import { sql } from 'drizzle-orm'
import type { Db } from '../db/client.js'
import { rowsOf } from '../db/rows.js'

// The closed horizon of the journal: the highest transaction id H such that
// no database transaction still in flight can add a ledger transaction with
// an id at or below H. Below H the journal is final: sealing it (seals.ts)
// or exporting it page by page (http/exports.ts) sees exactly what any later
// reader will see.
//
// Ids come from a sequence (CACHE 1: handed out in increasing order in
// time), but commits happen in any order: a transaction that drew id 10 may
// commit after the one that drew id 11. So "the highest id I can see" is not
// closed. How it is decided, without any lock that postings would wait on:
//
//   1. One statement reads U = the highest visible id and then assigns its
//      own xid X (pg_current_xact_id()). Its snapshot is taken before X.
//   2. Whoever drew an id N <= U drew it before U was drawn, so before U
//      committed, so before that snapshot, so before X was assigned; and it
//      held its xid before it drew N (the engine locks accounts first, and
//      migrations/*_ledger_xid_before_id assigns the xid of a bare INSERT
//      before its rows' defaults). Xids are assigned in increasing order, so
//      its xid is below X.
//   3. Wait, within the same database transaction, until every xid below X
//      has committed or aborted: the oldest running xid (pg_snapshot_xmin of
//      a fresh snapshot) is X itself, or, as xids are shared by every
//      database of the server, no session of this database (nor a prepared
//      transaction of it) holds an xid older than X. Then every id <= U is
//      final.
//
// The wait is normally a few milliseconds (postings are short) and never
// holds a lock. A ledger transaction open for longer than `waitMaxMs` (a
// stuck session) only postpones the horizon; idle_in_transaction and
// statement timeouts bound that. On PGlite (one connection, transactions run
// one at a time) the wait ends at once.

export interface HorizonOptions {
  /** How long to wait for older database transactions to finish. */
  waitMaxMs: number
}

export const HORIZON_DEFAULTS: HorizonOptions = { waitMaxMs: 5_000 }

const POLL_FIRST_MS = 2
const POLL_MAX_MS = 50

/**
 * The closed horizon (0 for an empty journal), or null when older database
 * transactions did not finish within `waitMaxMs`. `ifAbove`: return it at
 * once, without taking an xid, when nothing above it is visible yet.
 */
export async function closedHorizon(
  db: Db,
  options: Partial<HorizonOptions> & { ifAbove?: bigint } = {},
): Promise<bigint | null> {
  const { waitMaxMs } = { ...HORIZON_DEFAULTS, ...options }
  if (options.ifAbove !== undefined) {
    const visible = await maxVisibleId(db)
    if (visible <= options.ifAbove) return visible
  }
  return db.transaction(async (tx) => {
    const [probe] = rowsOf<{ upto: string; xid: string }>(
      await tx.execute(sql`
        select (select coalesce(max(id), 0) from ledger_transactions)::text as upto,
               pg_current_xact_id()::text as xid`),
    )
    if (!probe) throw new Error('audit: the horizon probe returned no row')
    const deadline = Date.now() + waitMaxMs
    let pauseMs = POLL_FIRST_MS
    for (;;) {
      // The backend status table is cached per transaction: read it afresh.
      await tx.execute(sql`select pg_stat_clear_snapshot()`)
      const [row] = rowsOf<{ closed: boolean }>(await tx.execute(olderFinished(probe.xid)))
      if (row?.closed) return BigInt(probe.upto)
      if (Date.now() >= deadline) return null
      await new Promise((resolve) => setTimeout(resolve, pauseMs))
      pauseMs = Math.min(pauseMs * 2, POLL_MAX_MS)
    }
  })
}

/**
 * True when every database transaction that held an xid older than `xid`
 * and could write to this database has finished. Cluster-wide first (the
 * oldest running xid, whatever its database); if that is held back, by
 * database: xids are global, and a long transaction in another database of
 * the same server (a bulk load, a migration) cannot add rows here. The
 * backends' xids in pg_stat_activity are visible to every role; prepared
 * (two-phase) transactions are in pg_prepared_xacts.
 */
function olderFinished(xid: string) {
  return sql`
    select pg_snapshot_xmin(pg_current_snapshot()) >= ${xid}::xid8
        or not exists (
             select 1 from pg_stat_activity a
              where a.datname = current_database() and a.pid <> pg_backend_pid()
                and a.backend_xid is not null and age(a.backend_xid) > age(${xid}::xid8::xid)
             union all
             select 1 from pg_prepared_xacts p
              where p.database = current_database() and age(p.transaction) > age(${xid}::xid8::xid)
           ) as closed`
}

async function maxVisibleId(db: Db): Promise<bigint> {
  const [row] = rowsOf<{ upto: string }>(
    await db.execute(sql`select coalesce(max(id), 0)::text as upto from ledger_transactions`),
  )
  return BigInt(row?.upto ?? '0')
}
