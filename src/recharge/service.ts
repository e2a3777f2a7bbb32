import { and, eq, inArray, or, sql } from 'drizzle-orm'
import type { Db, Tx } from '../db/client.js'
import { coinPackagePrices, coinPackages, rechargeOrders } from '../db/schema.js'
import { isUuid } from '../db/uuid.js'
import { DomainError } from '../graphql/errors.js'
import {
  type Ledger,
  LedgerError,
  type PostedTransaction,
  type PostingRequest,
  platform,
  userCoinDebt,
  userWallet,
} from '../ledger/index.js'
import { inTransaction } from '../ledger/tx.js'
import {
  type CreatedPayment,
  type PaymentGateway,
  type ProviderEvent,
  type ProviderName,
  type ProviderPayment,
  ProviderUnavailableError,
} from '../payments/types.js'

// Buying coins. Every path — webhook, the client's confirmation,
// reconciliation — ends in `settle`, which re-reads the provider's payment and
// brings the order and the books up to it, once: the order row is locked, and
// each posting has a key derived from the order (credit, each refund level,
// each dispute), so however often and in whatever order we learn about a
// payment, it is credited once and each refund is clawed back once.

export type RechargeOrder = typeof rechargeOrders.$inferSelect
export type RechargeStatus = RechargeOrder['status']

export const CURRENCY_DEFAULT = 'USD'
/** Orders pending longer than this are expired by reconciliation (money arriving later is still credited). */
export const PENDING_EXPIRY_MS = 24 * 60 * 60 * 1000
const DISPUTE_HOLD_MS = 180 * 24 * 60 * 60 * 1000

export interface ReconciliationProblem {
  kind: 'PAYMENT_WITHOUT_CREDIT' | 'CREDIT_WITHOUT_PAYMENT' | 'AMOUNT_MISMATCH' | 'PROVIDER_ERROR'
  orderId: string
  message: string
}

export interface ReconciliationReport {
  checked: number
  settled: number
  expired: number
  problems: ReconciliationProblem[]
}

export interface Checkout {
  provider: ProviderName
  clientSecret: string | null
  approvalUrl: string | null
  providerReference: string | null
}

export class RechargeService {
  constructor(
    private readonly db: Db,
    private readonly ledger: Ledger,
    private readonly gateways: ReadonlyMap<ProviderName, PaymentGateway>,
  ) {}

  gateway(provider: ProviderName): PaymentGateway | undefined {
    return this.gateways.get(provider)
  }

  // ---- the client's paths -------------------------------------------------

  async create(input: {
    userId: string
    packageId: string
    provider: ProviderName
    currency?: string | null
    idempotencyKey: string
  }): Promise<{ order: RechargeOrder; checkout: Checkout }> {
    const key = input.idempotencyKey
    if (key.trim().length === 0 || key.length > 200) {
      throw new DomainError(
        'INVALID_INPUT',
        'idempotencyKey must be 1 to 200 characters',
        'input.idempotencyKey',
      )
    }
    const gateway = this.gateways.get(input.provider)
    if (!gateway) {
      throw new DomainError(
        'PROVIDER_NOT_CONFIGURED',
        `${input.provider} is not available here`,
        'input.provider',
      )
    }
    const currency = input.currency ?? CURRENCY_DEFAULT
    let order = await this.findByKey(input.userId, key)
    if (
      order &&
      (order.packageId !== input.packageId ||
        order.provider !== input.provider ||
        order.currency !== currency)
    ) {
      throw new DomainError(
        'IDEMPOTENCY_KEY_REUSED',
        'this key was used for another recharge',
        'input.idempotencyKey',
      )
    }
    order ??= await this.insertOrder(input.userId, input.packageId, input.provider, currency, key)
    if (order.providerReference === null) order = await this.createAtProvider(order, gateway)
    return { order, checkout: checkoutOf(order) }
  }

  /** The client's return path: confirm with the provider, then settle. */
  async confirm(userId: string, orderId: string): Promise<RechargeOrder> {
    const order = await this.ownOrder(userId, orderId)
    if (order.providerReference === null) return order
    const gateway = this.requireGateway(order.provider)
    const payment = await callProvider(() => gateway.confirmPayment(order.providerReference as string))
    return this.settle(order.id, payment)
  }

  async ownOrder(userId: string, orderId: string): Promise<RechargeOrder> {
    if (!isUuid(orderId))
      throw new DomainError('RECHARGE_NOT_FOUND', 'no such recharge of yours', 'input.rechargeId')
    const [order] = await this.db
      .select()
      .from(rechargeOrders)
      .where(and(eq(rechargeOrders.id, orderId), eq(rechargeOrders.userId, userId)))
    if (!order) throw new DomainError('RECHARGE_NOT_FOUND', 'no such recharge of yours', 'input.rechargeId')
    return order
  }

  private async findByKey(userId: string, key: string): Promise<RechargeOrder | undefined> {
    const [order] = await this.db
      .select()
      .from(rechargeOrders)
      .where(and(eq(rechargeOrders.userId, userId), eq(rechargeOrders.idempotencyKey, key)))
    return order
  }

  private async insertOrder(
    userId: string,
    packageId: string,
    provider: ProviderName,
    currency: string,
    key: string,
  ): Promise<RechargeOrder> {
    if (!isUuid(packageId))
      throw new DomainError('PACKAGE_NOT_FOUND', 'no such coin package', 'input.packageId')
    if (!/^[A-Z]{3}$/.test(currency))
      throw new DomainError('INVALID_INPUT', 'currency is an ISO 4217 code', 'input.currency')
    const [offer] = await this.db
      .select({
        coins: coinPackages.coins,
        bonusCoins: coinPackages.bonusCoins,
        priceMinor: coinPackagePrices.amountMinor,
      })
      .from(coinPackages)
      .innerJoin(coinPackagePrices, eq(coinPackagePrices.packageId, coinPackages.id))
      .where(
        and(
          eq(coinPackages.id, packageId),
          eq(coinPackages.active, true),
          eq(coinPackagePrices.currency, currency),
        ),
      )
    if (!offer)
      throw new DomainError('PACKAGE_NOT_FOUND', `no coin package on sale in ${currency}`, 'input.packageId')
    // Concurrent creates with one key: one insert wins, the others read it.
    await this.db
      .insert(rechargeOrders)
      .values({ userId, packageId, provider, currency, idempotencyKey: key, ...offer })
      .onConflictDoNothing({ target: [rechargeOrders.userId, rechargeOrders.idempotencyKey] })
    return (await this.findByKey(userId, key)) as RechargeOrder
  }

  /**
   * Creates the provider's object with a key derived from the order, so a
   * retry after a lost answer gets the same object back. A provider outage is
   * a user error; the order stays without a provider object, invisible to
   * the books, and the next try with the same key completes it.
   */
  private async createAtProvider(order: RechargeOrder, gateway: PaymentGateway): Promise<RechargeOrder> {
    const created: CreatedPayment = await callProvider(() =>
      gateway.createPayment({
        orderId: order.id,
        amountMinor: order.priceMinor,
        currency: order.currency,
        description: `${order.coins + order.bonusCoins} coins`,
        idempotencyKey: `recharge-${order.id}`,
      }),
    )
    const [updated] = await this.db
      .update(rechargeOrders)
      .set({
        providerReference: created.reference,
        clientSecret: created.clientSecret,
        approvalUrl: created.approvalUrl,
        updatedAt: sql`now()`,
      })
      .where(eq(rechargeOrders.id, order.id))
      .returning()
    return updated as RechargeOrder
  }

  private requireGateway(provider: ProviderName): PaymentGateway {
    const gateway = this.gateways.get(provider)
    if (!gateway) throw new DomainError('PROVIDER_NOT_CONFIGURED', `${provider} is not available here`)
    return gateway
  }

  // ---- settle: the one step every path ends in ----------------------------

  /** Brings an order and the books up to the provider's payment (re-read unless given). */
  async settle(orderId: string, known?: ProviderPayment): Promise<RechargeOrder> {
    const [order] = await this.db.select().from(rechargeOrders).where(eq(rechargeOrders.id, orderId))
    if (!order) throw new Error(`recharge: no order ${orderId}`)
    if (order.providerReference === null) return order
    const payment =
      known ??
      (await callProvider(() =>
        this.requireGateway(order.provider).retrievePayment(order.providerReference as string),
      ))
    await this.ensureAccounts([order])
    return this.inTx((tx, posted) => this.settleInTx(tx, order.id, payment, posted))
  }

  /**
   * Settles several orders in one database transaction: each order locked
   * (in id order), all their postings in one ledger batch (one lock per hot
   * platform account for the lot, one commit), then `alongside` (the inbox
   * marks its events processed in the same commit). Throws if any posting is
   * refused; nothing is written then, and the caller settles them one by one.
   */
  async settleMany(
    items: readonly { order: RechargeOrder; payment: ProviderPayment }[],
    alongside?: (tx: Tx) => Promise<void>,
  ): Promise<RechargeOrder[]> {
    if (items.length === 0) return []
    await this.ensureAccounts(items.map((i) => i.order))
    const payments = new Map(items.map((i) => [i.order.id, i.payment]))
    return this.inTx(async (tx, posted) => {
      const orders = await tx
        .select()
        .from(rechargeOrders)
        .where(inArray(rechargeOrders.id, [...payments.keys()]))
        .orderBy(rechargeOrders.id)
        .for('update')
      const settled = await this.applySettles(tx, orders, payments, posted)
      if (alongside) await alongside(tx)
      return settled
    })
  }

  private async settleInTx(
    tx: Tx,
    orderId: string,
    payment: ProviderPayment,
    posted: PostedTransaction[],
  ): Promise<RechargeOrder> {
    // The order row is the lock that serializes every path for this order.
    const [order] = await tx.select().from(rechargeOrders).where(eq(rechargeOrders.id, orderId)).for('update')
    if (!order) throw new Error(`recharge: no order ${orderId}`)
    const [settled] = await this.applySettles(tx, [order], new Map([[order.id, payment]]), posted)
    return settled as RechargeOrder
  }

  /** Plans each locked order against its payment, posts every plan's postings in one batch, updates the orders. */
  private async applySettles(
    tx: Tx,
    orders: readonly RechargeOrder[],
    payments: ReadonlyMap<string, ProviderPayment>,
    posted: PostedTransaction[],
  ): Promise<RechargeOrder[]> {
    const plans = orders.map((order) => ({
      order,
      plan: planSettle(order, payments.get(order.id) as ProviderPayment),
    }))
    const requests = plans.flatMap(({ plan }) => plan.postings)
    const prepared = []
    for (const request of requests) prepared.push(await this.ledger.prepare(request, null, tx))
    const results = prepared.length > 0 ? await this.ledger.postInTx(tx, prepared) : []
    const ids = results.map((result) => {
      if (!result.ok) throw result.error
      if (!result.value.replayed) posted.push(result.value.transaction)
      return result.value.transaction.id
    })

    const changed: { order: RechargeOrder; next: RechargeOrder; completes: boolean }[] = []
    let at = 0
    for (const { order, plan } of plans) {
      const planIds = ids.slice(at, at + plan.postings.length)
      at += plan.postings.length
      const changes: Partial<RechargeOrder> = { ...plan.changes }
      if (plan.creditIndex !== null) changes.creditTransactionId = planIds[plan.creditIndex] as bigint
      if (Object.keys(changes).length > 0)
        changed.push({ order, next: { ...order, ...changes }, completes: plan.creditIndex !== null })
    }
    const updated = await updateOrders(tx, changed)
    return orders.map((order) => updated.get(order.id) ?? order)
  }

  /**
   * Creates (and commits) every account the orders' postings may touch, before
   * their transaction opens: an account created inside a transaction that
   * then rolls back would stay in the ledger's account cache.
   */
  private async ensureAccounts(orders: readonly RechargeOrder[]): Promise<void> {
    await this.ledger.accounts.resolve(
      this.db,
      orders.flatMap((order) => [
        userWallet(order.userId),
        userCoinDebt(order.userId),
        platform.coinsIssued,
        platform.promotions,
        clearing(order),
        platform.deferredRevenue(order.currency),
        platform.providerFees(order.currency),
      ]),
    )
  }

  /** Posts inside the order's transaction; the accounts exist already (ensureAccounts). */
  private async post(tx: Tx, request: PostingRequest, posted: PostedTransaction[]): Promise<bigint> {
    const [result] = await this.ledger.postInTx(tx, [await this.ledger.prepare(request, null, tx)])
    if (!result) throw new Error('recharge: the ledger returned no result')
    if (!result.ok) throw result.error
    if (!result.value.replayed) posted.push(result.value.transaction)
    return result.value.transaction.id
  }

  /** A transaction whose postings are announced once it has committed (and only then). */
  private async inTx<T>(work: (tx: Tx, posted: PostedTransaction[]) => Promise<T>): Promise<T> {
    let posted: PostedTransaction[] = []
    const result = await inTransaction(this.db, (tx) => {
      posted = [] // a retried attempt starts afresh
      return work(tx, posted)
    })
    this.ledger.notifyCommitted(posted)
    return result
  }

  // ---- disputes -----------------------------------------------------------

  /**
   * A dispute holds the order's coins while it is open (as many as the wallet
   * still has); won releases them; lost claws them back (the part already
   * spent becomes a debt) and takes back the money.
   */
  async applyDispute(
    orderId: string,
    dispute: NonNullable<ProviderEvent['dispute']>,
  ): Promise<RechargeOrder> {
    const [order] = await this.db.select().from(rechargeOrders).where(eq(rechargeOrders.id, orderId))
    if (!order) throw new Error(`recharge: no order ${orderId}`)
    if (order.creditTransactionId === null) return order // nothing credited, nothing to hold
    if (order.disputeStatus === 'won' || order.disputeStatus === 'lost') return order // decided: final
    const wallet = userWallet(order.userId)
    const holdKey = `recharge:${order.id}:dispute:${dispute.id}:hold`
    let holdId = order.disputeHoldId
    if (holdId === null) {
      const coins = order.coins + order.bonusCoins - order.clawedBackCoins
      const available = (await this.ledger.balance(wallet)).available
      const amount = smaller(coins, available)
      if (amount > 0n) {
        try {
          const { hold } = await this.ledger.hold({
            idempotencyKey: holdKey,
            kind: 'dispute_hold',
            account: wallet,
            counterAccount: platform.coinsIssued,
            amount,
            expiresAt: new Date(Date.now() + DISPUTE_HOLD_MS),
            description: `Coins held during a ${order.provider} dispute`,
            metadata: { orderId: order.id, disputeId: dispute.id },
          })
          holdId = hold.id
        } catch (error) {
          // Spent meanwhile: the dispute goes on without a hold; a loss becomes a debt.
          if (!(error instanceof LedgerError && error.code === 'INSUFFICIENT_FUNDS')) throw error
        }
      }
    }
    if (dispute.status === 'open') {
      return this.updateOrder(order.id, {
        status: 'disputed',
        disputeId: dispute.id,
        disputeStatus: 'open',
        disputeHoldId: holdId,
      })
    }
    if (dispute.status === 'won') {
      if (holdId !== null) await this.ledger.voidHold(holdId)
      return this.updateOrder(order.id, {
        status: order.refundedMinor > 0n ? 'partially_refunded' : 'succeeded',
        disputeId: dispute.id,
        disputeStatus: 'won',
        disputeHoldId: holdId,
      })
    }
    // Lost: the money goes back to the buyer, the coins come back to us.
    await this.ensureAccounts([order])
    let heldCoins = 0n
    if (holdId !== null) heldCoins = (await this.ledger.postHold(holdId)).transaction.entries[0]?.amount ?? 0n
    return this.inTx(async (tx, posted) => {
      const [locked] = await tx
        .select()
        .from(rechargeOrders)
        .where(eq(rechargeOrders.id, order.id))
        .for('update')
      if (!locked || locked.disputeStatus === 'lost') return locked as RechargeOrder
      const amount = smaller(dispute.amountMinor, locked.priceMinor - locked.refundedMinor)
      const target = locked.refundedMinor + amount
      const clawed = coinsFor(locked, target)
      const chargeback = chargebackRequest(
        locked,
        dispute.id,
        amount,
        clawed - locked.clawedBackCoins,
        heldCoins,
      )
      if (chargeback.entries.length > 0) await this.post(tx, chargeback, posted)
      const [updated] = await tx
        .update(rechargeOrders)
        .set({
          status: 'refunded',
          disputeId: dispute.id,
          disputeStatus: 'lost',
          disputeHoldId: holdId,
          refundedMinor: target,
          clawedBackCoins: clawed,
          updatedAt: sql`now()`,
        })
        .where(eq(rechargeOrders.id, locked.id))
        .returning()
      return updated as RechargeOrder
    })
  }

  private async updateOrder(
    id: string,
    set: Partial<typeof rechargeOrders.$inferInsert>,
  ): Promise<RechargeOrder> {
    const [updated] = await this.db
      .update(rechargeOrders)
      .set({ ...set, updatedAt: sql`now()` })
      .where(eq(rechargeOrders.id, id))
      .returning()
    return updated as RechargeOrder
  }

  /**
   * Re-checks orders still pending after `olderThanMs` against their provider
   * and settles them (a webhook that never came), expires the ones pending
   * past PENDING_EXPIRY_MS, and reports what does not add up.
   */
  async reconcile(options: { olderThanMs: number; limit?: number }): Promise<ReconciliationReport> {
    const report: ReconciliationReport = { checked: 0, settled: 0, expired: 0, problems: [] }
    const due = await this.db
      .select()
      .from(rechargeOrders)
      .where(
        and(
          eq(rechargeOrders.status, 'pending'),
          sql`${rechargeOrders.providerReference} is not null`,
          sql`${rechargeOrders.createdAt} <= now() - ${`${options.olderThanMs} milliseconds`}::interval`,
        ),
      )
      .orderBy(rechargeOrders.createdAt)
      .limit(options.limit ?? 500)
    for (const order of due) {
      report.checked++
      const gateway = this.gateways.get(order.provider)
      if (!gateway) continue
      try {
        // confirm: retrieves (Stripe), or captures an approved order the buyer never came back to (PayPal).
        const payment = await gateway.confirmPayment(order.providerReference as string)
        const settled = await this.settle(order.id, payment)
        if (settled.creditTransactionId !== null) report.settled++
        else if (settled.mismatch) {
          report.problems.push({ kind: 'AMOUNT_MISMATCH', orderId: order.id, message: settled.mismatch })
        } else if (
          payment.state === 'pending' &&
          Date.parse(order.createdAt.replace(' ', 'T')) < Date.now() - PENDING_EXPIRY_MS
        ) {
          await this.updateOrder(order.id, { status: 'expired' })
          report.expired++
        }
      } catch (error) {
        report.problems.push({ kind: 'PROVIDER_ERROR', orderId: order.id, message: String(error) })
      }
    }
    report.problems.push(...(await this.discrepancies()))
    return report
  }

  /** Orders whose books and payment disagree: paid but not credited, credited but not paid, mismatched. */
  async discrepancies(): Promise<ReconciliationProblem[]> {
    const rows = await this.db
      .select({
        id: rechargeOrders.id,
        status: rechargeOrders.status,
        mismatch: rechargeOrders.mismatch,
        credit: rechargeOrders.creditTransactionId,
      })
      .from(rechargeOrders)
      .where(
        sql`(${rechargeOrders.mismatch} is not null)
          or (${rechargeOrders.status} in ('succeeded', 'partially_refunded', 'refunded', 'disputed') and ${rechargeOrders.creditTransactionId} is null)
          or (${rechargeOrders.status} in ('pending', 'failed', 'canceled', 'expired') and ${rechargeOrders.creditTransactionId} is not null)`,
      )
      .limit(1000)
    return rows.map((r) =>
      r.mismatch
        ? { kind: 'AMOUNT_MISMATCH' as const, orderId: r.id, message: r.mismatch }
        : r.credit === null
          ? {
              kind: 'PAYMENT_WITHOUT_CREDIT' as const,
              orderId: r.id,
              message: `${r.status} but not credited`,
            }
          : { kind: 'CREDIT_WITHOUT_PAYMENT' as const, orderId: r.id, message: `credited but ${r.status}` },
    )
  }

  /**
   * The orders a batch of provider events are about (index-aligned; undefined
   * where none is found this way): by our id when the event carries it, else
   * by the provider's payment reference. One query per provider.
   */
  async ordersFor(
    items: readonly { provider: ProviderName; event: ProviderEvent }[],
  ): Promise<(RechargeOrder | undefined)[]> {
    const byId = new Map<string, RechargeOrder>()
    const byReference = new Map<string, RechargeOrder>()
    for (const provider of new Set(items.map((i) => i.provider))) {
      const mine = items.filter((i) => i.provider === provider)
      const ids = mine.flatMap(({ event }) => (event.orderId && isUuid(event.orderId) ? [event.orderId] : []))
      const references = mine.flatMap(({ event }) => (event.paymentReference ? [event.paymentReference] : []))
      if (ids.length === 0 && references.length === 0) continue
      const rows = await this.db
        .select()
        .from(rechargeOrders)
        .where(
          and(
            eq(rechargeOrders.provider, provider),
            or(
              ids.length > 0 ? inArray(rechargeOrders.id, ids) : undefined,
              references.length > 0 ? inArray(rechargeOrders.providerReference, references) : undefined,
            ),
          ),
        )
      for (const row of rows) {
        byId.set(row.id, row)
        if (row.providerReference) byReference.set(`${provider}:${row.providerReference}`, row)
      }
    }
    return items.map(
      ({ provider, event }) =>
        (event.orderId ? byId.get(event.orderId) : undefined) ??
        (event.paymentReference ? byReference.get(`${provider}:${event.paymentReference}`) : undefined),
    )
  }

  /** The order a provider event is about: by our id when the event carries it, else by the provider's reference. */
  async orderFor(provider: ProviderName, event: ProviderEvent): Promise<RechargeOrder | undefined> {
    if (event.orderId && isUuid(event.orderId)) {
      const [order] = await this.db.select().from(rechargeOrders).where(eq(rechargeOrders.id, event.orderId))
      if (order) return order
    }
    const where = event.paymentReference
      ? and(
          eq(rechargeOrders.provider, provider),
          eq(rechargeOrders.providerReference, event.paymentReference),
        )
      : event.captureId
        ? and(eq(rechargeOrders.provider, provider), eq(rechargeOrders.captureId, event.captureId))
        : undefined
    if (!where) return undefined
    const [order] = await this.db.select().from(rechargeOrders).where(where)
    return order
  }
}

// ---- pure parts: what each posting is --------------------------------------

/** What settling an order against the provider's payment posts and changes. */
export interface SettlePlan {
  postings: PostingRequest[]
  /** The order's new values, except the credit's transaction id. */
  changes: Partial<RechargeOrder>
  /** Which of `postings` is the credit (its transaction id goes on the order), if any. */
  creditIndex: number | null
}

/**
 * The settle step's decisions, for an order locked as it is now: credit a
 * paid order once (never if the amount or currency differs from the
 * snapshot: that is flagged), book a fee reported later, claw back refunds
 * beyond those already applied, and record a failure or cancellation.
 */
export function planSettle(order: RechargeOrder, payment: ProviderPayment): SettlePlan {
  const plan: SettlePlan = { postings: [], changes: {}, creditIndex: null }
  if (payment.state === 'succeeded') {
    const mismatch = mismatchOf(order, payment)
    if (mismatch) {
      // Flagged for an operator, never credited.
      if (order.mismatch !== mismatch) plan.changes.mismatch = mismatch
    } else if (order.creditTransactionId === null) {
      plan.creditIndex = plan.postings.push(creditRequest(order, payment)) - 1
      Object.assign(plan.changes, {
        status: 'succeeded' as const,
        feeMinor: payment.feeMinor,
        captureId: payment.captureId,
      })
    } else if (order.feeMinor === null && payment.feeMinor !== null && payment.feeMinor > 0n) {
      plan.postings.push(feeRequest(order, payment.feeMinor))
      plan.changes.feeMinor = payment.feeMinor
    }
    const credited = order.creditTransactionId !== null || plan.creditIndex !== null
    // While a dispute is open, money the provider takes back (PayPal reports a
    // reversal as a refund) is the dispute's to settle: its hold already has the coins.
    const disputeOpen = order.disputeStatus === 'open'
    if (credited && !disputeOpen && payment.refundedMinor > order.refundedMinor) {
      const target = smaller(payment.refundedMinor, order.priceMinor)
      const clawed = coinsFor(order, target)
      plan.postings.push(refundRequest(order, target, clawed - order.clawedBackCoins))
      Object.assign(plan.changes, {
        refundedMinor: target,
        clawedBackCoins: clawed,
        status: target >= order.priceMinor ? ('refunded' as const) : ('partially_refunded' as const),
      })
    }
  } else if (order.status === 'pending' && (payment.state === 'failed' || payment.state === 'canceled')) {
    plan.changes.status = payment.state
  }
  return plan
}

/** Writes the settled orders' new values in one statement; returns them as now stored, by id. */
async function updateOrders(
  tx: Tx,
  changed: readonly { next: RechargeOrder; completes: boolean }[],
): Promise<Map<string, RechargeOrder>> {
  if (changed.length === 0) return new Map()
  const column = (pick: (o: RechargeOrder) => string | bigint | null) =>
    sql.param(changed.map(({ next }) => pick(next)?.toString() ?? null))
  await tx.execute(sql`
    update recharge_orders o
       set status = v.status::recharge_status, mismatch = v.mismatch, credit_transaction_id = v.credit::bigint,
           fee_minor = v.fee::bigint, capture_id = v.capture, refunded_minor = v.refunded::bigint,
           clawed_back_coins = v.clawed::bigint, updated_at = now(),
           completed_at = case when v.completes::boolean then clock_timestamp() else o.completed_at end
      from unnest(${column((o) => o.id)}::uuid[], ${column((o) => o.status)}::text[], ${column((o) => o.mismatch)}::text[],
                  ${column((o) => o.creditTransactionId)}::text[], ${column((o) => o.feeMinor)}::text[],
                  ${column((o) => o.captureId)}::text[], ${column((o) => o.refundedMinor)}::text[],
                  ${column((o) => o.clawedBackCoins)}::text[],
                  ${sql.param(changed.map((c) => String(c.completes)))}::text[])
        as v(id, status, mismatch, credit, fee, capture, refunded, clawed, completes)
     where o.id = v.id`)
  const rows = await tx
    .select()
    .from(rechargeOrders)
    .where(
      inArray(
        rechargeOrders.id,
        changed.map(({ next }) => next.id),
      ),
    )
  return new Map(rows.map((row) => [row.id, row]))
}

export function checkoutOf(order: RechargeOrder): Checkout {
  return {
    provider: order.provider,
    clientSecret: order.clientSecret,
    approvalUrl: order.approvalUrl,
    providerReference: order.providerReference,
  }
}

/** Why the provider's payment differs from the order's snapshot, or null. */
export function mismatchOf(order: RechargeOrder, payment: ProviderPayment): string | null {
  if (payment.currency !== order.currency) return `currency ${payment.currency}, expected ${order.currency}`
  if (payment.amountMinor !== order.priceMinor)
    return `amount ${payment.amountMinor}, expected ${order.priceMinor}`
  return null
}

/** Coins to claw back once `refundedMinor` of the price is refunded: proportional, rounded down, all at a full refund. */
export function coinsFor(
  order: Pick<RechargeOrder, 'coins' | 'bonusCoins' | 'priceMinor'>,
  refundedMinor: bigint,
): bigint {
  const total = order.coins + order.bonusCoins
  if (refundedMinor >= order.priceMinor) return total
  return (total * refundedMinor) / order.priceMinor
}

const clearing = (order: RechargeOrder) =>
  order.provider === 'stripe'
    ? platform.stripeClearing(order.currency)
    : platform.paypalClearing(order.currency)

export function creditRequest(order: RechargeOrder, payment: ProviderPayment): PostingRequest {
  const wallet = userWallet(order.userId)
  const debt = userCoinDebt(order.userId)
  const fee = payment.feeMinor !== null && payment.feeMinor > 0n ? payment.feeMinor : 0n
  return {
    idempotencyKey: `recharge:${order.id}:credit`,
    kind: 'recharge',
    description: `Recharge: ${order.coins} coins${order.bonusCoins > 0n ? ` + ${order.bonusCoins} bonus` : ''}`,
    metadata: { orderId: order.id, provider: order.provider, reference: order.providerReference },
    entries: [
      // Coins: sold coins from the coins issued, bonus coins from promotions; a debt is repaid first.
      { account: platform.coinsIssued, direction: 'debit', amount: order.coins },
      { account: wallet, direction: 'credit', amount: order.coins, repayFirst: debt },
      ...(order.bonusCoins > 0n
        ? [
            { account: platform.promotions, direction: 'debit' as const, amount: order.bonusCoins },
            { account: wallet, direction: 'credit' as const, amount: order.bonusCoins, repayFirst: debt },
          ]
        : []),
      // Money: held at the provider, owed as coins until they are spent.
      { account: clearing(order), direction: 'debit', amount: order.priceMinor },
      { account: platform.deferredRevenue(order.currency), direction: 'credit', amount: order.priceMinor },
      ...(fee > 0n
        ? [
            { account: platform.providerFees(order.currency), direction: 'debit' as const, amount: fee },
            { account: clearing(order), direction: 'credit' as const, amount: fee },
          ]
        : []),
    ],
  }
}

export function feeRequest(order: RechargeOrder, feeMinor: bigint): PostingRequest {
  return {
    idempotencyKey: `recharge:${order.id}:fee`,
    kind: 'fee',
    description: `${order.provider} fee`,
    metadata: { orderId: order.id },
    entries: [
      { account: platform.providerFees(order.currency), direction: 'debit', amount: feeMinor },
      { account: clearing(order), direction: 'credit', amount: feeMinor },
    ],
  }
}

/** A refund up to `refundedMinor` in all: the money back to the buyer, the coins back from the wallet (or as debt). */
export function refundRequest(order: RechargeOrder, refundedMinor: bigint, coins: bigint): PostingRequest {
  const delta = refundedMinor - order.refundedMinor
  return {
    idempotencyKey: `recharge:${order.id}:refund:${refundedMinor}`,
    kind: 'refund',
    description: `Refund of ${delta} (${order.currency} minor units)`,
    metadata: { orderId: order.id, refundedMinor: refundedMinor.toString() },
    entries: [
      { account: platform.deferredRevenue(order.currency), direction: 'debit', amount: delta },
      { account: clearing(order), direction: 'credit', amount: delta },
      ...clawback(order, coins),
    ],
  }
}

function chargebackRequest(
  order: RechargeOrder,
  disputeId: string,
  amountMinor: bigint,
  coins: bigint,
  heldCoins: bigint,
): PostingRequest {
  // The held coins were already taken back when the hold was posted.
  const remaining = coins > heldCoins ? coins - heldCoins : 0n
  return {
    idempotencyKey: `recharge:${order.id}:dispute:${disputeId}:lost`,
    kind: 'chargeback',
    description: `Chargeback: dispute ${disputeId} lost`,
    metadata: { orderId: order.id, disputeId },
    entries: [
      ...(amountMinor > 0n
        ? [
            {
              account: platform.deferredRevenue(order.currency),
              direction: 'debit' as const,
              amount: amountMinor,
            },
            { account: clearing(order), direction: 'credit' as const, amount: amountMinor },
          ]
        : []),
      ...clawback(order, remaining),
    ],
  }
}

function clawback(order: RechargeOrder, coins: bigint): PostingRequest['entries'] {
  if (coins <= 0n) return []
  return [
    {
      account: userWallet(order.userId),
      direction: 'debit',
      amount: coins,
      shortfallTo: userCoinDebt(order.userId),
    },
    { account: platform.coinsIssued, direction: 'credit', amount: coins },
  ]
}

/** Runs a provider call; an outage becomes a user error the client can retry. */
async function callProvider<T>(call: () => Promise<T>): Promise<T> {
  try {
    return await call()
  } catch (error) {
    if (error instanceof ProviderUnavailableError) {
      throw new DomainError(
        'PROVIDER_UNAVAILABLE',
        'the payment provider is not answering; try again shortly',
      )
    }
    throw error
  }
}

/** The smaller of two amounts (Math.min takes no bigint). */
function smaller(a: bigint, b: bigint): bigint {
  return a < b ? a : b
}
