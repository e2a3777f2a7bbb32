import DataLoader from 'dataloader'
import type { Db } from '../db/client.js'
import {
  type AccountRow,
  accountsById,
  entriesOf,
  type JournalTransaction,
  reversalsOf,
  type StatementEntry,
  transactionsById,
} from './journal.js'

// Per request: a page of the journal costs one query for all its entries, one
// for all their accounts, one for the transactions they reverse and one for
// their reversals, however many rows the page has.

export interface AuditLoaders {
  account: DataLoader<bigint, AccountRow | null>
  transaction: DataLoader<bigint, JournalTransaction | null>
  entries: DataLoader<bigint, StatementEntry[]>
  reversal: DataLoader<bigint, JournalTransaction | null>
}

const byRequest = new WeakMap<object, AuditLoaders>()

/** Loader keys are bigints: compared by value through their decimal string. */
const cacheKeyFn = (id: bigint) => id.toString()

export function auditLoaders(ctx: { db: Db }): AuditLoaders {
  let loaders = byRequest.get(ctx)
  if (!loaders) {
    const db = ctx.db
    loaders = {
      account: new DataLoader(
        async (ids) => {
          const rows = new Map((await accountsById(db, ids)).map((a) => [a.id, a]))
          return ids.map((id) => rows.get(id) ?? null)
        },
        { cacheKeyFn },
      ),
      transaction: new DataLoader(
        async (ids) => {
          const rows = new Map((await transactionsById(db, ids)).map((t) => [t.id, t]))
          return ids.map((id) => rows.get(id) ?? null)
        },
        { cacheKeyFn },
      ),
      entries: new DataLoader(
        async (ids) => {
          const grouped = new Map<bigint, StatementEntry[]>()
          for (const entry of await entriesOf(db, ids)) {
            const list = grouped.get(entry.transactionId)
            if (list) list.push(entry)
            else grouped.set(entry.transactionId, [entry])
          }
          return ids.map((id) => grouped.get(id) ?? [])
        },
        { cacheKeyFn },
      ),
      reversal: new DataLoader(
        async (ids) => {
          const rows = new Map<bigint, JournalTransaction>()
          for (const t of await reversalsOf(db, ids)) if (t.reversesId !== null) rows.set(t.reversesId, t)
          return ids.map((id) => rows.get(id) ?? null)
        },
        { cacheKeyFn },
      ),
    }
    byRequest.set(ctx, loaders)
  }
  return loaders
}
