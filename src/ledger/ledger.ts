import { and, desc, eq, inArray, lte, sql } from 'drizzle-orm'
import type { Database, Db, DbOrTx, OneTrip, Tx } from '../db/client.js'
import { rowsOf } from '../db/rows.js'
import { ledgerAccounts, ledgerEntries, ledgerHolds } from '../db/schema.js'
import { AccountDirectory } from './accounts.js'
import { BalanceReads, type BalanceRow } from './balance-reads.js'
import { Coalescer } from './coalescer.js'
import { invalid, LedgerError } from './errors.js'
import { createHoldInTx, type PostHoldOptions, postHoldInTx, releaseHoldInTx, validateHold } from './holds.js'
import { checkIntegrity, type IntegrityReport } from './integrity.js'
import { LANES_MAX, laneOf, shardCodes, shardParent, shardSpec } from './lanes.js'
import {
  accountIdsOf,
  type FastBatch,
  loadTransactions,
  mayGuess,
  type PreparedPosting,
  planFastBatch,
  postBatchInOneTrip,
  postBatchInTx,
  type Settled,
} from './posting.js'
import { AccountStates, type Ticket } from './state-cache.js'
import { inTransaction } from './tx.js'
import type {
  Account,
  AccountBalance,
  AccountRef,
  Hold,
  HoldRequest,
  PostedTransaction,
  PostingRequest,
  PostingResult,
  TransactionKind,
} from './types.js'
import { checkBalanced, requestHash, validateShape } from './validate.js'

export interface LedgerOptions {
  /** Postings per coalesced database transaction. */
  batchSizeMax: number
  /**
   * Batches written at once, per lane. With one lane, 2 measured best on a
   * hot account since batches in flight are planned on each other and
   * pipelined on one connection (one is planned while the other runs); with
   * more lanes, 1 (the lanes overlap one another, and a second batch in
   * flight halves every batch). Unset: that choice. See BENCHMARKS.md.
   */
  concurrency?: number
  /** Postings allowed to wait for a batch before new ones are refused. */
  queueLengthMax: number
  /**
   * How long an account found moved by another writer (another instance, a
   * raw SQL session) has its batches planned under the locks rather than on
   * this process's expectations, which would be stale batch after batch.
   */
  contendedAccountMs: number
  /**
   * Writers, each with its own connection and batches, the postings split
   * among them by debited account (src/ledger/lanes.ts). 1 to LANES_MAX; on
   * PGlite (one connection) always 1.
   */
  lanes: number
  /**
   * Accounts credited by nearly every posting (a popular creator's earnings,
   * the platform's commission): with lanes, each lane but the first credits
   * a shard of them, so that the lanes do not wait on one row lock.
   */
  sharded: (code: string) => boolean
}

export const defaultLedgerOptions: LedgerOptions = {
  batchSizeMax: 500,
  queueLengthMax: 20_000,
  contendedAccountMs: 2_000,
  lanes: 1,
  sharded: () => false,
}

/** Batches in flight per lane unless LedgerOptions.concurrency says: 2 with one lane, 1 with more. */
export const defaultConcurrency = (lanes: number): number => (lanes > 1 ? 1 : 2)

/**
 * The double-entry engine. Every coin and every cent moves through `post`
 * (or `reverse`, or a hold). It knows nothing of GraphQL or of gifts.
 */
export class Ledger {
  readonly accounts = new AccountDirectory()
  private readonly listeners = new Set<(transactions: PostedTransaction[]) => void>()
  private readonly expiryHooks = new Map<string, (tx: Tx, hold: Hold) => Promise<void>>()
  /** Per lane: its postings' queue and batches; lane k writes on its own connection. */
  private readonly lanes: Coalescer<PreparedPosting, PostingResult>[]
  private readonly sharded: (code: string) => boolean
  /** Shards credited since they were last swept, with their account (sweepShards). */
  private readonly unswept = new Map<bigint, Account>()
  /** Balance reads (every `me { wallet { coins } }`): those asked for together are sent together. */
  readonly balanceReads: BalanceReads
  /** What this process expects its accounts' rows to hold: batches planned on it take the fast path. */
  private readonly known: AccountStates

  private readonly db: Db

  /** Takes the Database (PostgreSQL batches then go in one round trip) or a bare drizzle handle. */
  constructor(database: Database | Db, options: Partial<LedgerOptions> = {}) {
    const isDatabase = 'kind' in database && 'pool' in database
    this.db = isDatabase ? database.db : database
    const opts = { ...defaultLedgerOptions, ...options }
    if (!Number.isInteger(opts.lanes) || opts.lanes < 1 || opts.lanes > LANES_MAX)
      throw new Error(`ledger: lanes must be 1 to ${LANES_MAX}, not ${opts.lanes}`)
    // PostgreSQL: a batch written on expectations goes as BEGIN, one statement and COMMIT in one round trip.
    const oneTrip = isDatabase ? database.oneTrip : undefined
    const oneTripLane = isDatabase ? database.oneTripLane : undefined
    // As many lanes as asked for and the pool can give a writer to (one without a one-trip writer: PGlite).
    const writers: (OneTrip | undefined)[] = [oneTrip]
    while (oneTrip && writers.length < opts.lanes) {
      const writer = oneTripLane?.(writers.length)
      if (!writer) break
      writers.push(writer)
    }
    this.known = new AccountStates(100_000, opts.contendedAccountMs)
    const concurrency = opts.concurrency ?? defaultConcurrency(writers.length)
    this.lanes = writers.map(
      (writer) =>
        new Coalescer<PreparedPosting, PostingResult>((batch) => this.writeBatch(batch, writer), {
          ...opts,
          concurrency,
          // The engine's bound on waiting postings, shared among its lanes.
          queueLengthMax: Math.max(1, Math.ceil(opts.queueLengthMax / writers.length)),
        }),
    )
    this.sharded = opts.sharded
    this.balanceReads = new BalanceReads(this.db)
  }

  /**
   * Validates a request and resolves its accounts (creating spec'd ones). Run
   * it outside any transaction; inside one (pass it as `db`), only for
   * accounts that already exist, as a rolled-back creation must not be
   * remembered. (PGlite has one connection: inside a transaction, `db` must be it.)
   */
  async prepare(
    request: PostingRequest,
    reversesId: bigint | null = null,
    db: DbOrTx = this.db,
  ): Promise<PreparedPosting> {
    validateShape(request)
    const accounts = await this.accounts.resolve(
      db,
      request.entries.map((e) => e.account),
    )
    checkBalanced(request, accounts)
    const routes = await this.resolveRoutes(request, accounts, db)
    return {
      request,
      accounts,
      routes,
      requestHash: requestHash(request, accounts, reversesId, routes),
      reversesId,
    }
  }

  /**
   * Posts one transaction atomically. The same idempotency key with the same
   * content returns the original (`replayed: true`); with other content it
   * is refused. A refusal throws a LedgerError and changes nothing.
   */
  async post(request: PostingRequest): Promise<PostingResult> {
    return this.submit(await this.prepare(request))
  }

  /** Writes a prepared posting in its lane, its credits to sharded accounts on that lane's shards. */
  private async submit(prepared: PreparedPosting): Promise<PostingResult> {
    // A debit of a sharded account finds its shards' coins in it, with one
    // lane too: shards credited while there were more keep their coins.
    for (const [i, entry] of prepared.request.entries.entries()) {
      const account = prepared.accounts[i] as Account
      if (entry.direction === 'debit' && this.sharded(account.code)) await this.sweep(account.code)
    }
    const lanes = this.lanes.length
    const lane = laneOf(prepared, lanes)
    const posting = lane === 0 ? prepared : await this.onShards(prepared, lane)
    return (this.lanes[lane] as Coalescer<PreparedPosting, PostingResult>).submit(posting)
  }

  /**
   * The posting with its plain credits to sharded accounts moved to their
   * shards of `lane`. Its request hash is the request's, as prepared: a
   * retry is recognised whatever lane writes it.
   */
  private async onShards(prepared: PreparedPosting, lane: number): Promise<PreparedPosting> {
    let accounts: Account[] | undefined
    for (const [i, entry] of prepared.request.entries.entries()) {
      const account = prepared.accounts[i] as Account
      if (entry.direction !== 'credit' || prepared.routes?.[i] || !this.sharded(account.code)) continue
      const [shard] = await this.accounts.resolve(this.db, [shardSpec(account, lane)])
      accounts ??= [...prepared.accounts]
      accounts[i] = shard as Account
      this.unswept.set((shard as Account).id, account)
    }
    return accounts ? { ...prepared, accounts } : prepared
  }

  /**
   * Moves the balance of each of an account's shards into it (one posting
   * per shard with coins, kind `sweep`); returns how many were swept. Its
   * balance, read as the sum, does not change. Idempotent: a shard is swept
   * for its balance as of its last entry, under a key naming both.
   */
  async sweep(ref: AccountRef): Promise<number> {
    const [account] = await this.accounts.resolve(this.db, [ref])
    const parent = account as Account
    if (shardParent(parent.code) !== null) throw invalid(`${parent.code} is a shard; sweep its account`)
    const shards = await this.db
      .select({
        id: ledgerAccounts.id,
        code: ledgerAccounts.code,
        available: sql<string>`(${ledgerAccounts.balance} - ${ledgerAccounts.heldAmount})::text`,
        lastSeq: ledgerAccounts.lastSeq,
      })
      .from(ledgerAccounts)
      .where(inArray(ledgerAccounts.code, shardCodes(parent.code)))
    let swept = 0
    for (const shard of shards) {
      const amount = BigInt(shard.available)
      if (amount <= 0n) continue
      const prepared = await this.prepare({
        idempotencyKey: `sweep:${shard.id}:${shard.lastSeq}`,
        kind: 'sweep',
        description: `Sweep of ${shard.code} into ${parent.code}`,
        entries: [
          { account: shard.code, direction: 'debit', amount },
          { account: parent.code, direction: 'credit', amount },
        ],
      })
      try {
        // Lane 0 credits the account itself: the sweep's credit stays on it.
        await (this.lanes[0] as Coalescer<PreparedPosting, PostingResult>).submit(prepared)
        swept++
      } catch (error) {
        // Another sweep (another instance) took the coins first: what is left waits for the next one.
        if (!(error instanceof LedgerError && error.code === 'INSUFFICIENT_FUNDS')) throw error
      }
    }
    return swept
  }

  /** Sweeps the shards credited since their last sweep (a background job: startShardSweeps). */
  async sweepShards(): Promise<number> {
    const byParent = new Map<string, [bigint, Account][]>()
    for (const [id, parent] of this.unswept)
      byParent.set(parent.code, [...(byParent.get(parent.code) ?? []), [id, parent]])
    let swept = 0
    for (const [code, shards] of byParent) {
      for (const [id] of shards) this.unswept.delete(id)
      try {
        swept += await this.sweep(code)
      } catch (error) {
        // Swept next time: the shards stay marked (their coins count in the balance meanwhile).
        for (const [id, parent] of shards) this.unswept.set(id, parent)
        throw error
      }
    }
    return swept
  }

  /** Writers (lanes) this engine posts through. */
  get laneCount(): number {
    return this.lanes.length
  }

  /**
   * Posts prepared postings inside a caller's database transaction, for a
   * capability that writes its own rows with them (all or nothing). The
   * caller's transaction must not have touched ledger accounts before.
   */
  postInTx(tx: Tx, batch: readonly PreparedPosting[], ticket?: Ticket): Promise<Settled<PostingResult>[]> {
    return postBatchInTx(tx, batch, {}, this.known, ticket)
  }

  /**
   * For a capability that sends its postings inside its own pipelined
   * transaction: the batch planned on the engine's expectations, as one
   * statement (see FastBatch), under the batch's ticket (enter). Null: post it
   * the usual way (postInTx, same ticket). Accounts it has no expectation
   * of are read through `tx` (the caller's transaction).
   */
  planFast(tx: DbOrTx, batch: readonly PreparedPosting[], ticket: Ticket): Promise<FastBatch | null> {
    return planFastBatch(tx, batch, this.known, ticket)
  }

  /**
   * For a capability that posts inside its own transaction (postInTx) at a
   * high rate: the postings' place among the batches in flight, entered
   * before its transaction begins and ended (ticket.end) after it committed
   * or rolled back, so that no batch is planned on what it leaves before that
   * is known. `postings` may be a superset of what it then posts.
   */
  enter(postings: readonly PreparedPosting[]): Promise<Ticket> {
    return this.known.enter(accountIdsOf(postings), mayGuess(postings))
  }

  /** Posts the mirror image of a transaction, linked to it. A transaction is reversed at most once. */
  async reverse(
    transactionId: bigint,
    options: { idempotencyKey: string; description?: string; metadata?: Record<string, unknown> },
  ): Promise<PostingResult> {
    const [original] = await this.db.transaction((tx) => loadTransactions(tx, [transactionId]))
    if (!original) {
      throw new LedgerError('TRANSACTION_NOT_FOUND', `no transaction ${transactionId}`, {
        transactionId: transactionId.toString(),
      })
    }
    const request: PostingRequest = {
      idempotencyKey: options.idempotencyKey,
      kind: 'reversal',
      description: options.description ?? `Reversal of transaction ${transactionId}`,
      metadata: options.metadata ?? {},
      entries: original.transaction.entries.map((e) => ({
        // A shard's entry is reversed on its account (the shard may have been swept).
        account: shardParent(e.accountCode) ?? e.accountCode,
        direction: e.direction === 'debit' ? 'credit' : 'debit',
        amount: e.amount,
      })),
    }
    return this.submit(await this.prepare(request, transactionId))
  }

  /** Reserves an amount of an account until it is posted, voided or expires. */
  async hold(request: HoldRequest): Promise<{ hold: Hold; replayed: boolean }> {
    const accounts = await this.accounts.resolve(this.db, [request.account, request.counterAccount])
    const hash = validateHold(request, accounts)
    if (this.sharded((accounts[0] as Account).code)) await this.sweep(request.account)
    const result = await inTransaction(this.db, (tx) => createHoldInTx(tx, request, accounts, hash))
    this.known.invalidate([result.hold.accountId])
    return result
  }

  /**
   * A hold inside a caller's database transaction, for a capability that
   * writes its own rows with it (all or nothing). Resolve the accounts first,
   * outside the transaction: here they must exist.
   * Sweep a sharded account first (sweep), outside the transaction.
   */
  async holdInTx(tx: Tx, request: HoldRequest): Promise<{ hold: Hold; replayed: boolean }> {
    const accounts = await this.accounts.resolve(tx, [request.account, request.counterAccount])
    const hash = validateHold(request, accounts)
    const result = await createHoldInTx(tx, request, accounts, hash)
    this.known.invalidate([result.hold.accountId])
    return result
  }

  /** Posts a pending hold for its amount (or less: the rest is released). Idempotent. */
  async postHold(holdId: bigint, amount?: bigint): Promise<PostingResult> {
    const result = await inTransaction(this.db, (tx) => this.postHoldInTx(tx, holdId, { amount }))
    this.known.invalidate(result.transaction.entries.map((e) => e.accountId))
    if (!result.replayed) this.notifyCommitted([result.transaction])
    return result
  }

  /**
   * Posts a pending hold inside a caller's transaction, optionally with more
   * entries (another unit's side of the movement) in the same ledger
   * transaction. A posted hold returns its original transaction (`replayed`).
   * Call notifyCommitted after commit.
   */
  async postHoldInTx(tx: Tx, holdId: bigint, options: PostHoldOptions = {}): Promise<PostingResult> {
    const result = await postHoldInTx(tx, holdId, options, {
      byId: (id) => this.accountById(tx, id),
      byRefs: (refs) => this.accounts.resolve(tx, refs),
    })
    // Its entries and the released held amount moved accounts outside the batches.
    this.known.invalidate(result.transaction.entries.map((e) => e.accountId))
    return result
  }

  /** Releases a pending hold. Voiding a voided hold is a no-op. */
  async voidHold(holdId: bigint, resolution?: Record<string, unknown>): Promise<Hold> {
    const hold = await inTransaction(this.db, (tx) => releaseHoldInTx(tx, holdId, 'voided', resolution))
    this.known.invalidate([hold.accountId])
    return hold
  }

  /** Releases a pending hold inside a caller's transaction, with who decided and why. */
  async voidHoldInTx(tx: Tx, holdId: bigint, resolution?: Record<string, unknown>): Promise<Hold> {
    const hold = await releaseHoldInTx(tx, holdId, 'voided', resolution)
    this.known.invalidate([hold.accountId])
    return hold
  }

  /**
   * Runs `hook` inside the database transaction that expires a hold of this
   * kind, after the hold is released: a capability keeps its own rows in step
   * (a payout under review becomes expired). One hook per kind.
   */
  onHoldExpired(kind: TransactionKind, hook: (tx: Tx, hold: Hold) => Promise<void>): void {
    if (this.expiryHooks.has(kind))
      throw new Error(`ledger: holds of kind ${kind} already have an expiry hook`)
    this.expiryHooks.set(kind, hook)
  }

  /** Releases pending holds whose time is up; returns how many. Bounded per call. */
  async expireHolds(limit = 500): Promise<number> {
    const due = await this.db
      .select({ id: ledgerHolds.id })
      .from(ledgerHolds)
      .where(and(eq(ledgerHolds.status, 'pending'), lte(ledgerHolds.expiresAt, sql`clock_timestamp()`)))
      .orderBy(ledgerHolds.expiresAt)
      .limit(limit)
    let expired = 0
    for (const { id } of due) {
      try {
        await inTransaction(this.db, async (tx) => {
          const hold = await releaseHoldInTx(tx, id, 'expired', { reason: 'expired' })
          await this.expiryHooks.get(hold.kind)?.(tx, hold)
          this.known.invalidate([hold.accountId])
        })
        expired++
      } catch (error) {
        // Posted or voided meanwhile: nothing to expire.
        if (!(error instanceof LedgerError && error.code === 'HOLD_NOT_PENDING')) throw error
      }
    }
    return expired
  }

  /**
   * The current balance, read from the account row: constant time. A sharded
   * account's is the sum over it and its shards (at most LANES_MAX rows).
   */
  balance(ref: AccountRef): Promise<AccountBalance> {
    // The usual case, an account read before and not sharded: its row, with no other step.
    const known = this.accounts.cached(ref)
    if (known !== undefined && !this.sharded(known.code))
      return this.balanceReads.read(known.id).then((row) => balanceOf(known, row, ref))
    return this.resolvedBalance(ref)
  }

  private async resolvedBalance(ref: AccountRef): Promise<AccountBalance> {
    const [account] = (await this.accounts.resolve(this.db, [ref])) as [Account]
    const [row] = this.sharded(account.code)
      ? await this.shardedBalance(account)
      : [await this.balanceReads.read(account.id)]
    return balanceOf(account, row, ref)
  }

  /**
   * The balance at an instant, from the entry history: the balance after the
   * account's last entry posted at or before it (per account, posting times
   * follow the sequence, as they are read under the account's lock).
   */
  async balanceAt(ref: AccountRef, at: Date | string): Promise<bigint> {
    const [account] = await this.accounts.resolve(this.db, [ref])
    const instant = typeof at === 'string' ? at : at.toISOString()
    const ids = [(account as Account).id]
    if (this.sharded((account as Account).code)) {
      const shards = await this.db
        .select({ id: ledgerAccounts.id })
        .from(ledgerAccounts)
        .where(inArray(ledgerAccounts.code, shardCodes((account as Account).code)))
      ids.push(...shards.map((s) => s.id))
    }
    let total = 0n
    for (const id of ids) {
      const [row] = await this.db
        .select({ balanceAfter: ledgerEntries.balanceAfter })
        .from(ledgerEntries)
        .where(
          and(eq(ledgerEntries.accountId, id), lte(ledgerEntries.postedAt, sql`${instant}::timestamptz`)),
        )
        .orderBy(desc(ledgerEntries.postedAt), desc(ledgerEntries.accountSeq))
        .limit(1)
      total += row?.balanceAfter ?? 0n
    }
    return total
  }

  /** A sharded account's row summed with its shards' (one statement; they sum to the same totals). */
  private async shardedBalance(account: Account) {
    const codes = [account.code, ...shardCodes(account.code)]
    const [row] = await this.db
      .select({
        rows: sql<number>`count(*)::int`,
        balance: sql<string>`sum(${ledgerAccounts.balance})::text`,
        heldAmount: sql<string>`sum(${ledgerAccounts.heldAmount})::text`,
        debitsTotal: sql<string>`sum(${ledgerAccounts.debitsTotal})::text`,
        creditsTotal: sql<string>`sum(${ledgerAccounts.creditsTotal})::text`,
        lastSeq: sql<string>`sum(${ledgerAccounts.lastSeq})::text`,
      })
      .from(ledgerAccounts)
      .where(inArray(ledgerAccounts.code, codes))
    if (!row || row.rows === 0) return []
    return [
      {
        balance: BigInt(row.balance),
        heldAmount: BigInt(row.heldAmount),
        debitsTotal: BigInt(row.debitsTotal),
        creditsTotal: BigInt(row.creditsTotal),
        lastSeq: BigInt(row.lastSeq),
      },
    ]
  }

  /** Recomputes everything from the entries, on one consistent snapshot. */
  checkIntegrity(): Promise<IntegrityReport> {
    return this.db.transaction((tx) => checkIntegrity(tx), {
      isolationLevel: 'repeatable read',
      accessMode: 'read only',
    })
  }

  /**
   * Batches written on this process's expectations of their accounts' rows
   * (`held`), and batches whose expectations were stale (`stale`), since start.
   */
  get expectations(): Readonly<{ held: number; stale: number }> {
    return this.known.expectations
  }

  /** Postings waiting for a batch (for metrics). */
  get pendingPostings(): number {
    return this.lanes.reduce((n, lane) => n + lane.pending, 0)
  }

  /** The shortfallTo / repayFirst accounts of the entries, checked against their entries' accounts. */
  private async resolveRoutes(
    request: PostingRequest,
    accounts: Account[],
    db: DbOrTx,
  ): Promise<(Account | null)[] | undefined> {
    if (!request.entries.some((e) => e.shortfallTo !== undefined || e.repayFirst !== undefined))
      return undefined
    return Promise.all(
      request.entries.map(async (e, i) => {
        const ref = e.shortfallTo ?? e.repayFirst
        if (ref === undefined) return null
        if (e.shortfallTo !== undefined && e.repayFirst !== undefined)
          throw invalid('an entry has one route at most')
        if (e.shortfallTo !== undefined && e.direction !== 'debit')
          throw invalid('shortfallTo applies to debits')
        if (e.repayFirst !== undefined && e.direction !== 'credit')
          throw invalid('repayFirst applies to credits')
        const [route] = await this.accounts.resolve(db, [ref])
        const account = accounts[i] as Account
        if (!route || route.id === account.id) throw invalid('a route is another account')
        if (route.unit !== account.unit) {
          throw new LedgerError(
            'UNIT_MISMATCH',
            `route ${route.code} is in ${route.unit}, not ${account.unit}`,
          )
        }
        return route
      }),
    )
  }

  private async writeBatch(
    batch: PreparedPosting[],
    oneTrip: OneTrip | undefined,
  ): Promise<Settled<PostingResult>[]> {
    const ticket = await this.known.enter(accountIdsOf(batch), mayGuess(batch))
    try {
      const results =
        (oneTrip && (await postBatchInOneTrip(this.db, oneTrip, batch, this.known, ticket))) ||
        (await inTransaction(this.db, (tx) => postBatchInTx(tx, batch, {}, this.known, ticket)))
      this.notifyCommitted(results.flatMap((r) => (r.ok && !r.value.replayed ? [r.value.transaction] : [])))
      return results
    } catch (error) {
      ticket.taint()
      throw error
    } finally {
      ticket.end()
    }
  }

  /**
   * Listens to committed postings (balances to push to clients, metrics).
   * Called after commit, never for a rolled-back or replayed posting.
   */
  onCommitted(listener: (transactions: PostedTransaction[]) => void): () => void {
    this.listeners.add(listener)
    return () => this.listeners.delete(listener)
  }

  /** For callers of postInTx: tell the listeners once their own transaction has committed. */
  notifyCommitted(transactions: PostedTransaction[]): void {
    if (transactions.length === 0) return
    for (const listener of this.listeners) {
      try {
        listener(transactions)
      } catch {
        // A listener's failure must not undo or fail a committed posting.
      }
    }
  }

  private async accountById(tx: Tx, id: bigint): Promise<Account> {
    const rows = rowsOf<{ code: string }>(
      await tx.execute(sql`select code from ledger_accounts where id = ${id}`),
    )
    const code = rows[0]?.code
    if (code === undefined) throw new LedgerError('UNKNOWN_ACCOUNT', `no account ${id}`)
    const [account] = await this.accounts.resolve(tx, [code])
    return account as Account
  }
}

function balanceOf(account: Account, row: BalanceRow | undefined, ref: AccountRef): AccountBalance {
  if (!row) throw new LedgerError('UNKNOWN_ACCOUNT', `no account ${typeof ref === 'string' ? ref : ref.code}`)
  return {
    account,
    balance: row.balance,
    available: row.balance - row.heldAmount,
    held: row.heldAmount,
    debitsTotal: row.debitsTotal,
    creditsTotal: row.creditsTotal,
    lastSeq: row.lastSeq,
  }
}
