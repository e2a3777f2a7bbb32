import { sql } from 'drizzle-orm'
import type { DbOrTx } from '../db/client.js'
import { rowsOf } from '../db/rows.js'

/** What the engine needs of an account to apply postings to it: its row's moving parts. */
export interface AccountState {
  balance: bigint
  heldAmount: bigint
  lastSeq: bigint
}

/**
 * The engine's expectation of its accounts' rows: the state each was left in
 * by the last batch this process planned on it. A batch is planned on these
 * expectations before it takes any lock, and written in the same statement
 * that locks its accounts, on condition that every locked row still is what
 * was expected (src/ledger/posting.ts). The hot accounts' locks are then held
 * for one statement and the commit, not for three round trips to this
 * process and the work in between.
 *
 * An expectation is never trusted: the statement compares it with the locked
 * row, and a stale one (another process or session moved the account, a
 * batch planned on it rolled back) only costs that batch the slow path, which
 * plans again on the rows it locked and refreshes the expectations. So there
 * is no invalidation to get right, and a wrong entry here cannot reach the
 * books (the database's own checks stand behind it as well).
 *
 * Bounded: the least recently used accounts are dropped beyond `capacity`.
 */
export class AccountStates {
  private readonly states = new Map<bigint, AccountState>()
  /** Per account, the batch planned on it whose statement has not yet told whether its plan held. */
  private readonly deciding = new Map<bigint, Promise<void>>()
  /** Accounts found moved by someone else: until then, batches on them are planned under the locks. */
  private readonly contendedUntil = new Map<bigint, number>()
  /**
   * Since start: batches written on their expectations (`held`), and batches
   * whose expectations the locked rows contradicted (`stale`: each cost a
   * statement, and the batch was planned again on the rows).
   */
  readonly expectations = { held: 0, stale: 0 }

  /**
   * @param contendedMs how long an account another writer was found to move
   *   is left to the slow path: where another instance posts to the same hot
   *   account, expectations would be stale batch after batch, each costing a
   *   statement for nothing.
   */
  constructor(
    readonly capacity = 100_000,
    readonly contendedMs = 2_000,
  ) {}

  get size(): number {
    return this.states.size
  }

  /**
   * Waits until every batch of this process planned on these accounts has
   * learnt whether its plan held (its lock statement returned), then marks
   * the accounts as the caller's until it calls the returned function. A
   * batch planned while another is in flight on the same accounts then
   * expects what that one actually leaves, not what it hoped to: otherwise one
   * stale expectation would send every overlapping batch after it down the
   * slow path. Returns null after `patienceMs` (the caller plans under the
   * locks instead): a wait in this process is invisible to the database's
   * deadlock detector, so it is never unbounded.
   */
  async claim(ids: readonly bigint[], patienceMs = 1_000): Promise<(() => void) | null> {
    const deadline = Date.now() + patienceMs
    for (;;) {
      const pending = [...new Set(ids.flatMap((id) => this.deciding.get(id) ?? []))]
      if (pending.length === 0) break
      const left = deadline - Date.now()
      if (left <= 0) return null
      let timer: NodeJS.Timeout | undefined
      const timeout = new Promise<void>((resolve) => {
        timer = setTimeout(resolve, left)
      })
      await Promise.race([Promise.all(pending), timeout])
      clearTimeout(timer)
    }
    let decided = () => {}
    const mine = new Promise<void>((resolve) => {
      decided = resolve
    })
    for (const id of ids) this.deciding.set(id, mine)
    return () => {
      for (const id of ids) if (this.deciding.get(id) === mine) this.deciding.delete(id)
      decided()
    }
  }

  /**
   * The expected state of each account (ids sorted, as locked), reading the
   * accounts this cache does not hold from their rows, without a lock. Null
   * when an account does not exist (the lock statement reports it).
   */
  async expect(tx: DbOrTx, ids: readonly bigint[]): Promise<Map<bigint, AccountState> | null> {
    const now = Date.now()
    for (const id of ids) {
      const until = this.contendedUntil.get(id)
      if (until === undefined) continue
      if (until > now) return null
      this.contendedUntil.delete(id)
    }
    const expected = new Map<bigint, AccountState>()
    const missing: bigint[] = []
    for (const id of ids) {
      const state = this.states.get(id)
      if (state) expected.set(id, { ...state })
      else missing.push(id)
    }
    if (missing.length > 0) {
      const rows = rowsOf<{ id: string; balance: string; held_amount: string; last_seq: string }>(
        await tx.execute(sql`
          select id::text, balance::text, held_amount::text, last_seq::text from ledger_accounts
           where id = any(${sql.param(missing.map(String))}::bigint[])`),
      )
      if (rows.length !== missing.length) return null
      for (const r of rows) {
        expected.set(BigInt(r.id), {
          balance: BigInt(r.balance),
          heldAmount: BigInt(r.held_amount),
          lastSeq: BigInt(r.last_seq),
        })
      }
    }
    return expected
  }

  /** Remembers the state a batch leaves its accounts in (expected to commit; checked when next used). */
  remember(states: ReadonlyMap<bigint, AccountState>): void {
    for (const [id, s] of states) {
      this.states.delete(id) // re-inserted last: Map order is recency
      this.states.set(id, { balance: s.balance, heldAmount: s.heldAmount, lastSeq: s.lastSeq })
    }
    for (const id of this.states.keys()) {
      if (this.states.size <= this.capacity) break
      this.states.delete(id)
    }
  }

  /**
   * The locked rows contradicted these expectations: the rows are remembered,
   * and the accounts that differ are left to the slow path for a while.
   */
  contradicted(expected: ReadonlyMap<bigint, AccountState>, actual: ReadonlyMap<bigint, AccountState>): void {
    const until = Date.now() + this.contendedMs
    for (const [id, a] of actual) {
      const e = expected.get(id)
      if (!e || e.balance !== a.balance || e.heldAmount !== a.heldAmount || e.lastSeq !== a.lastSeq)
        this.contendedUntil.set(id, until)
    }
    this.remember(actual)
  }

  /** Drops what is known of these accounts (a batch on them failed). */
  forget(ids: Iterable<bigint>): void {
    for (const id of ids) this.states.delete(id)
  }
}
