import type { Db, Tx } from '../db/client.js'

// Runs a ledger transaction at READ COMMITTED (the sessions' default, set in
// db/client.ts: row locks give the isolation the ledger needs) and retries the failures that a retry cures: a
// serialization failure, a deadlock, or losing a race on a unique key to a
// concurrent writer (the retry then sees the winner's row).

const RETRYABLE = new Set(['40001', '40P01', '23505'])
export const ATTEMPTS_MAX = 8

export async function inTransaction<T>(db: Db, work: (tx: Tx) => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await db.transaction(work)
    } catch (error) {
      const state = sqlState(error)
      if (attempt >= ATTEMPTS_MAX || state === undefined || !RETRYABLE.has(state)) throw error
      await sleep(Math.min(200, 2 ** attempt) * (0.5 + Math.random()))
    }
  }
}

/** The SQLSTATE of a database error, looking through wrappers (drizzle wraps driver errors). */
export function sqlState(error: unknown): string | undefined {
  for (let e = error as { code?: unknown; cause?: unknown } | undefined, depth = 0; e && depth < 5; depth++) {
    if (typeof e.code === 'string' && /^[0-9A-Z]{5}$/.test(e.code)) return e.code
    e = e.cause as typeof e
  }
  return undefined
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))
