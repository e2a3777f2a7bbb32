import { sql } from 'drizzle-orm'
import type { DbOrTx } from '../db/client.js'
import { rowsOf } from '../db/rows.js'

/** A batch's place among those in flight on its accounts (AccountStates.enter). */
export interface Ticket {
  /** The batch may be planned on expectations (false once tainted). */
  readonly guessing: boolean
  /** Another batch's failure tainted one of these accounts since this one entered. */
  overtaken(): boolean
  /** The batch's plan did not hold, or it failed: its accounts are read afresh once nothing is in flight on them. */
  taint(): void
  /** The batch is committed, or nothing of it will be. */
  end(): void
}

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
 * batch planned on it failed) only costs that batch the slow path, which
 * plans again on the rows it locked; its accounts are tainted and read afresh
 * once nothing is in flight on them (enter). A wrong entry here cannot reach
 * the books (the database's own checks stand behind it as well).
 *
 * Bounded: the least recently used accounts are dropped beyond `capacity`.
 */
export class AccountStates {
  private readonly states = new Map<bigint, AccountState>()
  /** Expecting and planning, one batch at a time (see exclusive). */
  private planning: Promise<unknown> = Promise.resolve()
  /** Per account: batches in flight on it (entered, not yet ended). */
  private readonly inflight = new Map<bigint, number>()
  /** Tainted accounts: resolved once no batch is in flight on them. */
  private readonly drains = new Map<bigint, { promise: Promise<void>; resolve: () => void }>()
  /**
   * Per account with batches in flight: how many times it was tainted since
   * (a batch's failure is explained if it changed meanwhile). Dropped when
   * nothing is in flight on the account, so it never outgrows `inflight`.
   */
  private readonly epochs = new Map<bigint, number>()
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
   * A batch enters before it plans and leaves (ticket.end) once it is
   * committed or nothing of it will be. It may be planned on expectations
   * (`ticket.guessing`) unless one of its accounts is contended, or tainted:
   * then it waits, at most `patienceMs`, for the batches in flight on the
   * tainted accounts to be done (their rows are read afresh after), or is
   * planned under the locks.
   *
   * Batches in flight on the same accounts are planned one on another's plan
   * (remembered before its statement is sent): a batch does not wait for the
   * one before it to be answered. If that one's plan does not hold, the ones
   * planned on it are doomed too (their statements find the rows otherwise
   * and write nothing); the accounts are tainted until all of them are done,
   * so no batch is planned on a plan that failed. A wait here is invisible to
   * the database's deadlock detector, so it is never unbounded.
   */
  async enter(ids: readonly bigint[], wantsGuess: boolean, patienceMs = 1_000): Promise<Ticket> {
    let guessing = wantsGuess
    const deadline = Date.now() + patienceMs
    while (guessing) {
      const now = Date.now()
      if (ids.some((id) => this.contended(id, now))) guessing = false
      const waits = [...new Set(ids.flatMap((id) => this.drains.get(id)?.promise ?? []))]
      if (!guessing || waits.length === 0) break
      const left = deadline - now
      if (left <= 0) {
        guessing = false
        break
      }
      let timer: NodeJS.Timeout | undefined
      await Promise.race([
        Promise.all(waits),
        new Promise<void>((resolve) => {
          timer = setTimeout(resolve, left)
        }),
      ])
      clearTimeout(timer)
    }
    for (const id of ids) this.inflight.set(id, (this.inflight.get(id) ?? 0) + 1)
    const epochs = ids.map((id) => this.epochs.get(id) ?? 0)
    // A batch planned under the locks leaves what no one here can foresee.
    if (!guessing) this.taint(ids)
    let tainted = !guessing
    let ended = false
    return {
      get guessing() {
        return !tainted
      },
      overtaken: () => ids.some((id, i) => (this.epochs.get(id) ?? 0) !== epochs[i]),
      taint: () => {
        if (tainted) return
        tainted = true
        this.taint(ids)
      },
      end: () => {
        if (ended) return
        ended = true
        for (const id of ids) {
          const left = (this.inflight.get(id) ?? 1) - 1
          if (left > 0) {
            this.inflight.set(id, left)
            continue
          }
          this.inflight.delete(id)
          // Epochs only tell tickets in flight apart: none is left on this account.
          this.epochs.delete(id)
          const drain = this.drains.get(id)
          if (drain) {
            // Nothing in flight on it any more: its row is read afresh next time.
            this.drains.delete(id)
            this.states.delete(id)
            drain.resolve()
          }
        }
      },
    }
  }

  /**
   * These accounts' rows were changed outside the engine's batches (a hold
   * created, posted, voided or expired): what is expected of them is
   * dropped, and batches in flight on them fail as explained (their epochs
   * moved), not as another writer's doing.
   */
  invalidate(ids: readonly bigint[]): void {
    for (const id of ids) {
      if ((this.inflight.get(id) ?? 0) > 0) this.taint([id])
      else this.states.delete(id)
    }
  }

  /** Whether another writer was found moving this account lately (an expired mark is dropped). */
  private contended(id: bigint, now: number): boolean {
    const until = this.contendedUntil.get(id)
    if (until === undefined) return false
    if (until > now) return true
    this.contendedUntil.delete(id)
    return false
  }

  private taint(ids: readonly bigint[]): void {
    for (const id of ids) {
      this.epochs.set(id, (this.epochs.get(id) ?? 0) + 1)
      this.states.delete(id)
      if (!this.drains.has(id)) {
        let resolve = () => {}
        const promise = new Promise<void>((r) => {
          resolve = r
        })
        this.drains.set(id, { promise, resolve })
      }
    }
  }

  /**
   * The expected state of each account (ids sorted, as locked), reading the
   * accounts this cache does not hold from their rows, without a lock. Null
   * when an account does not exist (the lock statement reports it).
   */
  async expect(tx: DbOrTx, ids: readonly bigint[]): Promise<Map<bigint, AccountState> | null> {
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

  /**
   * Runs `work` (expect, plan, remember) when no other batch's is running:
   * a batch whose expectations need a read must not be overtaken by one that
   * plans on the same unread rows.
   */
  exclusive<T>(work: () => Promise<T>): Promise<T> {
    const run = this.planning.then(work)
    this.planning = run.catch(() => {})
    return run
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
   * The locked rows contradicted a batch's expectations, and no failure of
   * this process explains it (another writer moved the accounts): the
   * accounts that differ are planned under the locks for a while.
   */
  contradicted(expected: ReadonlyMap<bigint, AccountState>, actual: ReadonlyMap<bigint, AccountState>): void {
    const until = Date.now() + this.contendedMs
    for (const [id, a] of actual) {
      const e = expected.get(id)
      // A row behind the expectation is this process's own doing: a batch
      // planned before has not landed yet (or failed). Only another writer
      // moves a row to or past it otherwise.
      if (
        !e ||
        (a.lastSeq >= e.lastSeq &&
          (a.balance !== e.balance || a.heldAmount !== e.heldAmount || a.lastSeq !== e.lastSeq))
      )
        this.contendedUntil.set(id, until)
    }
  }

  /** Drops what is known of these accounts (a batch on them failed). */
  forget(ids: Iterable<bigint>): void {
    for (const id of ids) this.states.delete(id)
  }
}
