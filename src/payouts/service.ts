import { randomUUID } from 'node:crypto'
import { and, asc, desc, eq, getTableColumns, gt, lt, or, type SQL, sql } from 'drizzle-orm'
import type { Db, DbOrTx, Tx } from '../db/client.js'
import { rowsOf } from '../db/rows.js'
import { ledgerHolds, payoutRequests, users } from '../db/schema.js'
import { isUuid } from '../db/uuid.js'
import { DomainError } from '../graphql/errors.js'
import { formatMoney } from '../graphql/money.js'
import {
  creatorEarnings,
  InsufficientFundsError,
  type Ledger,
  LedgerError,
  type PostedTransaction,
  platform,
} from '../ledger/index.js'
import { inTransaction } from '../ledger/tx.js'

// Creators cash out earned coins. A request holds the coins (a two-phase
// ledger hold on the creator's earnings) while an admin reviews it:
//
//   request  → hold pending       payout pending     (nothing posted yet)
//   approve  → hold posted        payout approved    (one transaction: coins and money)
//   reject   → hold voided        payout rejected    (coins available again)
//   expiry   → hold expired       payout expired     (the ledger's expiry job)
//
// Every path that changes a payout locks its hold first (through the ledger),
// then the accounts, then the payout row: one order, so paths racing on one
// payout (two admins, an admin and the expiry job) wait for each other and
// never deadlock. The hold moves out of pending once (the database's guard),
// so whichever path comes first decides, and the others see its decision.

export type PayoutRow = typeof payoutRequests.$inferSelect
export type PayoutStatus = PayoutRow['status']
type UserRow = typeof users.$inferSelect

/** A payout with what its readers need: its creator's profile and when its hold expires. */
export interface Payout extends PayoutRow {
  creator: UserRow
  expiresAt: string
}

export interface PayoutConfig {
  /** ISO 4217: the currency payouts are paid in. */
  currency: string
  /** Minor units per coin, as an exact fraction; amounts are rounded down. */
  rate: { numerator: bigint; denominator: bigint }
  minCoins: bigint
  /** Coins requested in any 24 hours (pending and approved requests count). */
  dailyCapCoins: bigint
  /** How long a request waits for review before its hold expires. */
  holdMs: number
}

export const PAYOUT_PAGE_MAX = 100
export const NOTE_LENGTH_MAX = 500
const KEY_LENGTH_MAX = 200
/** The daily cap's window: the last 24 hours, not the calendar day (see README, "Payouts"). */
const CAP_WINDOW = sql`interval '24 hours'`

export interface PayoutPage {
  /** Keyset position: the last row seen (its requested_at as the database wrote it, and id). */
  after: { requestedAt: string; id: string } | null
  limit: number
}

export class PayoutService {
  constructor(
    private readonly db: Db,
    private readonly ledger: Ledger,
    readonly config: PayoutConfig,
  ) {
    // An unreviewed request whose hold expires becomes `expired`, in the expiry's own transaction.
    ledger.onHoldExpired('payout', (tx, hold) => this.markExpired(tx, hold.id))
  }

  /** The money `coins` convert to at the configured rate, rounded down. */
  amountFor(coins: bigint): bigint {
    return (coins * this.config.rate.numerator) / this.config.rate.denominator
  }

  // ---- creators --------------------------------------------------------------

  /**
   * A creator asks to cash out earned coins. Idempotent on (creator, key): the
   * same key and coins return the first request (whatever became of it); other
   * coins are refused. A refusal changes nothing.
   */
  async request(
    viewer: { userId: string; roles: readonly string[] },
    input: { coins: bigint; idempotencyKey: string },
  ): Promise<Payout> {
    const key = input.idempotencyKey
    if (key.trim().length === 0 || key.length > KEY_LENGTH_MAX) {
      throw new DomainError(
        'INVALID_INPUT',
        `idempotencyKey must be 1 to ${KEY_LENGTH_MAX} characters`,
        'input.idempotencyKey',
      )
    }
    if (!viewer.roles.includes('creator')) {
      throw new DomainError('NOT_A_CREATOR', 'only creators can cash out earnings')
    }
    if (input.coins <= 0n) throw new DomainError('INVALID_INPUT', 'coins must be positive', 'input.coins')
    const creatorId = viewer.userId
    const earnings = creatorEarnings(creatorId)
    // Accounts are created outside the transaction (a rolled-back creation must not be cached).
    await this.ledger.accounts.resolve(this.db, [earnings, platform.coinsIssued])
    // Coins the ledger's lanes credited to the earnings' shards are held from the account itself.
    await this.ledger.sweep(earnings)

    const id = await inTransaction(this.db, async (tx) => {
      // One request at a time per creator: the key check, the daily cap and
      // the hold see every request made before.
      await tx.execute(sql`select pg_advisory_xact_lock(hashtextextended(${`payout:${creatorId}`}, 0))`)
      const [prior] = await tx
        .select()
        .from(payoutRequests)
        .where(and(eq(payoutRequests.creatorId, creatorId), eq(payoutRequests.idempotencyKey, key)))
      if (prior) {
        if (prior.coins !== input.coins) {
          throw new DomainError(
            'IDEMPOTENCY_KEY_REUSED',
            'this idempotency key was used for another payout request',
            'input.idempotencyKey',
          )
        }
        return prior.id
      }
      await this.checkLimits(tx, creatorId, input.coins)
      return this.hold(tx, creatorId, key, input.coins)
    })
    return this.get(id)
  }

  /** A creator's own requests, newest first. */
  async listOwn(creatorId: string, page: PayoutPage): Promise<Payout[]> {
    return this.select(
      this.db,
      and(
        eq(payoutRequests.creatorId, creatorId),
        page.after === null
          ? undefined
          : or(
              lt(payoutRequests.requestedAt, sql`${page.after.requestedAt}::timestamptz`),
              and(
                eq(payoutRequests.requestedAt, sql`${page.after.requestedAt}::timestamptz`),
                lt(payoutRequests.id, page.after.id),
              ),
            ),
      ),
      [desc(payoutRequests.requestedAt), desc(payoutRequests.id)],
      page.limit,
    )
  }

  /** Coins a creator may still request now: the daily cap minus what the last 24 hours requested. */
  async requestableCoins(creatorId: string): Promise<bigint> {
    const left = this.config.dailyCapCoins - (await this.requestedInWindow(this.db, creatorId))
    return left > 0n ? left : 0n
  }

  // ---- admins ----------------------------------------------------------------

  /** Requests in the order they were made (the review queue: the oldest expires first). */
  async list(filter: { status: PayoutStatus | null }, page: PayoutPage): Promise<Payout[]> {
    return this.select(
      this.db,
      and(
        filter.status === null ? undefined : eq(payoutRequests.status, filter.status),
        page.after === null
          ? undefined
          : or(
              gt(payoutRequests.requestedAt, sql`${page.after.requestedAt}::timestamptz`),
              and(
                eq(payoutRequests.requestedAt, sql`${page.after.requestedAt}::timestamptz`),
                gt(payoutRequests.id, page.after.id),
              ),
            ),
      ),
      [asc(payoutRequests.requestedAt), asc(payoutRequests.id)],
      page.limit,
    )
  }

  /**
   * Pays a request: one ledger transaction takes the coins out of the
   * creator's earnings (retired to coins issued) and books the money as
   * payable, with the hold posted and the payout approved in the same
   * database transaction. Its key is the payout's, so the money is booked once
   * however often, or by however many admins at once, it is approved; an
   * approved payout is returned as it is.
   */
  async approve(adminId: string, input: { payoutId: string; note: string | null }): Promise<Payout> {
    const note = input.note === null ? null : input.note.trim() || null
    if (note !== null && note.length > NOTE_LENGTH_MAX) {
      throw new DomainError('INVALID_INPUT', `a note is at most ${NOTE_LENGTH_MAX} characters`, 'input.note')
    }
    const payout = await this.decidable(adminId, input.payoutId)
    if (payout.status === 'approved') return payout
    if (payout.status !== 'pending') throw notPending(payout)
    const money = { amountMinor: payout.amountMinor, currency: payout.currency }
    await this.ledger.accounts.resolve(this.db, [
      platform.creatorPayouts(payout.currency),
      platform.payoutsPayable(payout.currency),
    ])

    let posted: PostedTransaction | null = null
    await inTransaction(this.db, async (tx) => {
      posted = null
      const decision = { decision: 'approved', payoutId: payout.id, decidedBy: adminId, note }
      let result: Awaited<ReturnType<Ledger['postHoldInTx']>>
      try {
        result = await this.ledger.postHoldInTx(tx, payout.holdId, {
          idempotencyKey: `payout:${payout.id}`,
          description: `Payout of ${payout.coins} coins for ${formatMoney(money)}`,
          metadata: { ...decision, ...payoutTerms(payout) },
          entries: [
            {
              account: platform.creatorPayouts(payout.currency),
              direction: 'debit',
              amount: payout.amountMinor,
            },
            {
              account: platform.payoutsPayable(payout.currency),
              direction: 'credit',
              amount: payout.amountMinor,
            },
          ],
          resolution: decision,
        })
      } catch (error) {
        // Rejected or expired meanwhile (or its time is up): its decision stands.
        if (error instanceof LedgerError && error.code === 'HOLD_NOT_PENDING') {
          throw notPending(payout, error.details.status)
        }
        throw error
      }
      if (!result.replayed) posted = result.transaction
      await tx
        .update(payoutRequests)
        .set({
          status: 'approved',
          decidedAt: sql`now()`,
          decidedBy: adminId,
          decisionReason: note,
          transactionId: result.transaction.id,
        })
        .where(and(eq(payoutRequests.id, payout.id), eq(payoutRequests.status, 'pending')))
    })
    if (posted) this.ledger.notifyCommitted([posted])
    return this.get(payout.id)
  }

  /** Turns a request down: its hold is voided (the coins are available again), with who and why. */
  async reject(adminId: string, input: { payoutId: string; reason: string }): Promise<Payout> {
    const reason = input.reason.trim()
    if (reason.length === 0 || reason.length > NOTE_LENGTH_MAX) {
      throw new DomainError('INVALID_INPUT', `a reason is 1 to ${NOTE_LENGTH_MAX} characters`, 'input.reason')
    }
    const payout = await this.decidable(adminId, input.payoutId)
    if (payout.status === 'rejected') return payout
    if (payout.status !== 'pending') throw notPending(payout)
    await inTransaction(this.db, async (tx) => {
      const decision = { decision: 'rejected', payoutId: payout.id, decidedBy: adminId, reason }
      try {
        await this.ledger.voidHoldInTx(tx, payout.holdId, decision)
      } catch (error) {
        if (error instanceof LedgerError && error.code === 'HOLD_NOT_PENDING') {
          throw notPending(payout, error.details.status)
        }
        throw error
      }
      await tx
        .update(payoutRequests)
        .set({ status: 'rejected', decidedAt: sql`now()`, decidedBy: adminId, decisionReason: reason })
        .where(and(eq(payoutRequests.id, payout.id), eq(payoutRequests.status, 'pending')))
    })
    const decided = await this.get(payout.id)
    // Voided by another admin's rejection a moment ago: theirs stands, and says so.
    if (decided.status !== 'rejected') throw notPending(decided)
    return decided
  }

  // ---- internals ---------------------------------------------------------------

  async get(id: string): Promise<Payout> {
    const [payout] = await this.select(this.db, eq(payoutRequests.id, id), [], 1)
    if (!payout) throw new DomainError('PAYOUT_NOT_FOUND', 'no such payout request', 'input.payoutId')
    return payout
  }

  /** A payout an admin may decide on: it exists and is not their own. */
  private async decidable(adminId: string, payoutId: string): Promise<Payout> {
    if (!isUuid(payoutId))
      throw new DomainError('PAYOUT_NOT_FOUND', 'no such payout request', 'input.payoutId')
    const payout = await this.get(payoutId)
    if (payout.creatorId === adminId) {
      throw new DomainError(
        'CANNOT_DECIDE_OWN_PAYOUT',
        'another admin must review your own payout request',
        'input.payoutId',
      )
    }
    return payout
  }

  private async checkLimits(tx: Tx, creatorId: string, coins: bigint): Promise<void> {
    const { minCoins, dailyCapCoins } = this.config
    if (coins < minCoins) {
      throw new DomainError('PAYOUT_BELOW_MINIMUM', `a payout is at least ${minCoins} coins`, 'input.coins')
    }
    const requested = await this.requestedInWindow(tx, creatorId)
    if (requested + coins > dailyCapCoins) {
      const left = dailyCapCoins > requested ? dailyCapCoins - requested : 0n
      throw new DomainError(
        'PAYOUT_CAP_EXCEEDED',
        `payouts are capped at ${dailyCapCoins} coins in 24 hours; ${left} more can be requested now`,
        'input.coins',
      )
    }
  }

  /** Holds the coins and writes the request; returns its id. Inside the request's transaction. */
  private async hold(tx: Tx, creatorId: string, key: string, coins: bigint): Promise<string> {
    const id = randomUUID()
    const terms = {
      amountMinor: this.amountFor(coins),
      currency: this.config.currency,
      rateNumerator: this.config.rate.numerator,
      rateDenominator: this.config.rate.denominator,
    }
    let holdId: bigint
    try {
      const { hold } = await this.ledger.holdInTx(tx, {
        idempotencyKey: `payout:${id}:hold`,
        kind: 'payout',
        account: creatorEarnings(creatorId),
        counterAccount: platform.coinsIssued,
        amount: coins,
        expiresAt: new Date(Date.now() + this.config.holdMs),
        description: `Payout of ${coins} coins under review`,
        metadata: { payoutId: id, creatorId, ...payoutTerms({ coins, ...terms }) },
      })
      holdId = hold.id
    } catch (error) {
      if (error instanceof InsufficientFundsError) {
        throw new DomainError(
          'INSUFFICIENT_EARNINGS',
          `you have ${error.available > 0n ? error.available : 0n} coins to cash out (coins held for payouts under review excluded)`,
          'input.coins',
        )
      }
      throw error
    }
    await tx.insert(payoutRequests).values({ id, creatorId, idempotencyKey: key, coins, holdId, ...terms })
    return id
  }

  /** Pending and approved requests of the last 24 hours: what counts against the daily cap. */
  private async requestedInWindow(db: DbOrTx, creatorId: string): Promise<bigint> {
    const [row] = rowsOf<{ coins: string }>(
      await db.execute(sql`
        select coalesce(sum(${payoutRequests.coins}), 0)::text as coins from ${payoutRequests}
         where ${payoutRequests.creatorId} = ${creatorId}
           and ${payoutRequests.status} in ('pending', 'approved')
           and ${payoutRequests.requestedAt} > now() - ${CAP_WINDOW}`),
    )
    return BigInt(row?.coins ?? '0')
  }

  private async markExpired(tx: Tx, holdId: bigint): Promise<void> {
    await tx
      .update(payoutRequests)
      .set({
        status: 'expired',
        decidedAt: sql`now()`,
        decisionReason: 'not reviewed before its hold expired',
      })
      .where(and(eq(payoutRequests.holdId, holdId), eq(payoutRequests.status, 'pending')))
  }

  private async select(db: DbOrTx, where: SQL | undefined, order: SQL[], limit: number): Promise<Payout[]> {
    const rows = await db
      .select({
        payout: getTableColumns(payoutRequests),
        creator: getTableColumns(users),
        expiresAt: ledgerHolds.expiresAt,
      })
      .from(payoutRequests)
      .innerJoin(users, eq(users.id, payoutRequests.creatorId))
      .innerJoin(ledgerHolds, eq(ledgerHolds.id, payoutRequests.holdId))
      .where(where)
      .orderBy(...order)
      .limit(Math.min(limit, PAYOUT_PAGE_MAX + 1))
    return rows.map((r) => ({ ...r.payout, creator: r.creator, expiresAt: r.expiresAt }))
  }
}

/** What a payout converts, for the ledger's metadata (bigints as strings: JSON). */
function payoutTerms(p: {
  coins: bigint
  amountMinor: bigint
  currency: string
  rateNumerator: bigint
  rateDenominator: bigint
}) {
  return {
    coins: p.coins.toString(),
    amountMinor: p.amountMinor.toString(),
    currency: p.currency,
    rate: `${p.rateNumerator}/${p.rateDenominator}`,
  }
}

/** A decision that came too late: `holdStatus` is the hold's, when the ledger saw it move first. */
function notPending(payout: Pick<PayoutRow, 'status'>, holdStatus?: unknown): DomainError {
  const byHold: Record<string, PayoutStatus> = { posted: 'approved', voided: 'rejected', expired: 'expired' }
  const status = (typeof holdStatus === 'string' ? byHold[holdStatus] : undefined) ?? payout.status
  return new DomainError(
    'PAYOUT_NOT_PENDING',
    status === 'expired'
      ? 'this payout request expired before review; its coins are back in the earnings'
      : `this payout request was already ${status}`,
    'input.payoutId',
  )
}
