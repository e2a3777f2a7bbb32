import { and, eq, inArray, sql } from 'drizzle-orm'
import type { Db, Tx } from '../db/client.js'
import { rowsOf } from '../db/rows.js'
import { webhookEvents } from '../db/schema.js'
import { DomainError } from '../graphql/errors.js'
import {
  type PaymentGateway,
  type ProviderEvent,
  type ProviderName,
  type ProviderPayment,
  WebhookVerificationError,
} from '../payments/types.js'
import type { RechargeOrder, RechargeService } from './service.js'

// Webhooks are never acted on directly: a verified event is stored in the
// inbox (unique per provider and event id) and acknowledged at once; a worker
// processes the inbox at its own pace, with retries and backoff, and parks an
// event that keeps failing, with its error, for an operator.

export const INBOX_LIMITS = {
  claimBatchMax: 50,
  /** Claimed batches processed at once per process (each settles in one transaction). */
  batchesInFlight: 2,
  /** Provider re-reads at once per batch (they wait on the provider, not on us). */
  fetchConcurrency: 16,
  /** Events processed one by one at once per batch (each may hold a pooled connection while it settles). */
  processConcurrency: 8,
  attemptsMax: 8,
  backoffBaseMs: 1_000,
  backoffMaxMs: 60 * 60 * 1_000,
  /**
   * How long a claim lasts (WEBHOOK_LEASE_MS overrides it): events claimed by
   * a process that died are taken over by another (or by the restarted one)
   * only once their lease has run out. Longer than a batch can take.
   */
  leaseMs: 60_000,
  errorLengthMax: 1_000,
} as const

export type ReceiveResult = { status: 200; duplicate: boolean } | { status: 400 | 404; error: string }

type InboxRow = typeof webhookEvents.$inferSelect

const HANDLED = new Set([
  // Stripe
  'payment_intent.succeeded',
  'payment_intent.payment_failed',
  'payment_intent.canceled',
  'payment_intent.processing',
  'charge.succeeded',
  'charge.refunded',
  'charge.refund.updated',
  'refund.created',
  'refund.updated',
  'charge.dispute.created',
  'charge.dispute.updated',
  'charge.dispute.closed',
  'charge.dispute.funds_withdrawn',
  'charge.dispute.funds_reinstated',
  // PayPal
  'CHECKOUT.ORDER.APPROVED',
  'CHECKOUT.ORDER.COMPLETED',
  'PAYMENT.CAPTURE.COMPLETED',
  'PAYMENT.CAPTURE.DENIED',
  'PAYMENT.CAPTURE.REFUNDED',
  'PAYMENT.CAPTURE.REVERSED',
  'CUSTOMER.DISPUTE.CREATED',
  'CUSTOMER.DISPUTE.UPDATED',
  'CUSTOMER.DISPUTE.RESOLVED',
])

export class WebhookInbox {
  private draining: Promise<void> | null = null
  private again = false

  constructor(
    private readonly db: Db,
    private readonly recharge: RechargeService,
    private readonly onError: (
      error: unknown,
      event: { provider: string; eventId: string },
    ) => void = () => {},
    private readonly leaseMs: number = INBOX_LIMITS.leaseMs,
  ) {}

  /** The route's whole job: verify, store once, acknowledge. Processing happens after. */
  async receive(
    provider: ProviderName,
    rawBody: Buffer,
    headers: Record<string, string | undefined>,
  ): Promise<ReceiveResult> {
    const gateway = this.recharge.gateway(provider)
    if (!gateway) return { status: 404, error: `${provider} is not configured` }
    let event: ProviderEvent
    try {
      event = await gateway.verifyWebhook(rawBody, headers)
    } catch (error) {
      if (error instanceof WebhookVerificationError)
        return { status: 400, error: 'webhook verification failed' }
      throw error
    }
    const inserted = await this.db
      .insert(webhookEvents)
      .values({
        provider,
        eventId: event.eventId,
        type: event.type,
        payload: serializeEvent(event),
        status: HANDLED.has(event.type) ? 'pending' : 'ignored',
      })
      .onConflictDoNothing({ target: [webhookEvents.provider, webhookEvents.eventId] })
      .returning({ id: webhookEvents.id })
    if (inserted.length > 0) this.kick()
    return { status: 200, duplicate: inserted.length === 0 }
  }

  /** Processes what is due, soon, without making the caller wait. */
  kick(): void {
    if (this.draining) {
      this.again = true
      return
    }
    this.draining = this.drain()
      .then(() => undefined)
      .catch((error) => this.onError(error, { provider: '-', eventId: '-' }))
      .finally(() => {
        this.draining = null
        if (this.again) {
          this.again = false
          this.kick()
        }
      })
  }

  /** Waits for the current drain, if any (tests, shutdown). */
  async idle(): Promise<void> {
    while (this.draining) await this.draining
  }

  /**
   * Processes due events until none is left; returns how many were handled.
   * Several batches are in flight at once, so that one batch's provider
   * re-reads overlap another's commit (claims never overlap: leases, skip locked).
   */
  async drain(): Promise<number> {
    let handled = 0
    const worker = async () => {
      for (;;) {
        const claimed = await this.claim()
        if (claimed.length === 0) return
        await this.processBatch(claimed)
        handled += claimed.length
      }
    }
    await Promise.all(Array.from({ length: INBOX_LIMITS.batchesInFlight }, worker))
    return handled
  }

  /**
   * A claimed batch. Events that only settle an order (a payment succeeded or
   * failed, a refund) are settled together: their orders found in one query,
   * each order's payment re-read from the provider once, then one database
   * transaction settles them all and marks the events processed (one commit
   * for the batch, one lock per hot platform account). The rest — disputes,
   * a PayPal approval to capture, an event whose order or payment cannot be
   * had, or a group that failed — go one event at a time, with retries and
   * backoff, so that only the culprit is retried.
   */
  private async processBatch(rows: InboxRow[]): Promise<void> {
    const { groups, single } = await this.group(rows)
    const paid: { order: RechargeOrder; payment: ProviderPayment; rows: InboxRow[] }[] = []
    await eachLimited([...groups.values()], INBOX_LIMITS.fetchConcurrency, async (group) => {
      try {
        const payment = await group.gateway.retrievePayment(group.order.providerReference as string)
        paid.push({ order: group.order, payment, rows: group.rows })
      } catch {
        single.push(...group.rows) // the single path records the error and backs off
      }
    })
    if (paid.length > 0) {
      const settled = paid.flatMap((p) => p.rows)
      try {
        await this.recharge.settleMany(paid, (tx) => markProcessed(tx, settled))
      } catch {
        single.push(...settled)
      }
    }
    await eachLimited(single, INBOX_LIMITS.processConcurrency, (row) => this.processOne(row))
  }

  /** Sorts a batch into groups by order (events that only settle) and events for the single path. */
  private async group(rows: InboxRow[]): Promise<{ groups: Map<string, OrderGroup>; single: InboxRow[] }> {
    const single: InboxRow[] = []
    const settling: { row: InboxRow; event: ProviderEvent }[] = []
    for (const row of rows) {
      let event: ProviderEvent
      try {
        event = toEvent(row)
      } catch {
        single.push(row)
        continue
      }
      if (event.dispute || event.type === 'CHECKOUT.ORDER.APPROVED') single.push(row)
      else settling.push({ row, event })
    }
    const orders = await this.recharge.ordersFor(
      settling.map(({ row, event }) => ({ provider: row.provider, event })),
    )
    const groups = new Map<string, OrderGroup>()
    settling.forEach(({ row }, i) => {
      const order = orders[i]
      const gateway = order ? this.recharge.gateway(order.provider) : undefined
      if (!order || order.providerReference === null || !gateway) {
        single.push(row)
        return
      }
      const group = groups.get(order.id)
      if (group) group.rows.push(row)
      else groups.set(order.id, { order, gateway, rows: [row] })
    })
    return { groups, single }
  }

  /** Claims due events with a lease, so that several workers (instances) never process one twice at once. */
  private async claim(): Promise<InboxRow[]> {
    const result = await this.db.execute(sql`
      update webhook_events set lease_until = now() + ${`${this.leaseMs} milliseconds`}::interval,
                                attempts = attempts + 1
       where id in (
         select id from webhook_events
          where status = 'pending' and next_attempt_at <= now() and (lease_until is null or lease_until < now())
          order by id limit ${INBOX_LIMITS.claimBatchMax}
          for update skip locked)
      returning id::text`)
    const ids = rowsOf<{ id: string }>(result).map((r) => BigInt(r.id))
    if (ids.length === 0) return []
    const rows = await this.db.query.webhookEvents.findMany({
      where: { id: { in: ids } },
      orderBy: { id: 'asc' },
    })
    return rows
  }

  private async processOne(row: InboxRow): Promise<void> {
    try {
      await this.apply(row)
      await this.db
        .update(webhookEvents)
        .set({ status: 'processed', processedAt: sql`now()`, leaseUntil: null, lastError: null })
        .where(eq(webhookEvents.id, row.id))
    } catch (error) {
      const message = (error instanceof Error ? `${error.name}: ${error.message}` : String(error)).slice(
        0,
        INBOX_LIMITS.errorLengthMax,
      )
      const park = row.attempts >= INBOX_LIMITS.attemptsMax
      const delayMs = Math.min(
        INBOX_LIMITS.backoffMaxMs,
        INBOX_LIMITS.backoffBaseMs * 2 ** (row.attempts - 1),
      )
      await this.db
        .update(webhookEvents)
        .set({
          status: park ? 'parked' : 'pending',
          lastError: message,
          leaseUntil: null,
          nextAttemptAt: sql`now() + ${`${delayMs} milliseconds`}::interval`,
        })
        .where(and(eq(webhookEvents.id, row.id)))
      this.onError(error, { provider: row.provider, eventId: row.eventId })
    }
  }

  /**
   * What an event means: whatever it says, re-read the payment and settle
   * (credit, refunds); a dispute event also moves the dispute.
   */
  private async apply(row: InboxRow): Promise<void> {
    const gateway = this.recharge.gateway(row.provider)
    if (!gateway) throw new Error(`${row.provider} is no longer configured`)
    // The stored payload is verified; map it again rather than trusting a second copy.
    const event = toEvent(row)
    const order = await this.recharge.orderFor(row.provider, event)
    if (!order) throw new Error(`no recharge order for ${row.provider} event ${row.eventId}`)
    try {
      // An approved PayPal order is captured here if the buyer never came back to confirm.
      const payment =
        event.type === 'CHECKOUT.ORDER.APPROVED' && order.providerReference
          ? await gateway.confirmPayment(order.providerReference)
          : undefined
      await this.recharge.settle(order.id, payment)
      if (event.dispute) await this.recharge.applyDispute(order.id, event.dispute)
    } catch (error) {
      if (error instanceof DomainError && error.code === 'PROVIDER_UNAVAILABLE')
        throw new Error(error.message)
      throw error
    }
  }
}

/** The mapped event is stored beside the raw one: `payload` holds both. */
function toEvent(row: InboxRow): ProviderEvent {
  const stored = row.payload as { mapped?: SerializedEvent } & Record<string, unknown>
  if (!stored.mapped) throw new Error(`inbox event ${row.id} has no mapped event`)
  return deserialize(stored.mapped, row)
}

interface SerializedEvent {
  paymentReference: string | null
  captureId: string | null
  orderId: string | null
  refundedMinor: string | null
  dispute: { id: string; amountMinor: string; currency: string; status: 'open' | 'won' | 'lost' } | null
}

export function serializeEvent(event: ProviderEvent): { mapped: SerializedEvent; raw: unknown } {
  return {
    mapped: {
      paymentReference: event.paymentReference,
      captureId: event.captureId,
      orderId: event.orderId,
      refundedMinor: event.refundedMinor?.toString() ?? null,
      dispute: event.dispute ? { ...event.dispute, amountMinor: event.dispute.amountMinor.toString() } : null,
    },
    raw: event.payload,
  }
}

function deserialize(m: SerializedEvent, row: InboxRow): ProviderEvent {
  return {
    provider: row.provider,
    eventId: row.eventId,
    type: row.type,
    paymentReference: m.paymentReference,
    captureId: m.captureId,
    orderId: m.orderId,
    refundedMinor: m.refundedMinor === null ? null : BigInt(m.refundedMinor),
    dispute: m.dispute ? { ...m.dispute, amountMinor: BigInt(m.dispute.amountMinor) } : null,
    payload: row.payload,
  }
}

/** The events of one order in a batch, settled once against one re-read of its payment. */
interface OrderGroup {
  order: RechargeOrder
  gateway: PaymentGateway
  rows: InboxRow[]
}

async function markProcessed(tx: Tx, rows: readonly InboxRow[]): Promise<void> {
  await tx
    .update(webhookEvents)
    .set({ status: 'processed', processedAt: sql`now()`, leaseUntil: null, lastError: null })
    .where(
      inArray(
        webhookEvents.id,
        rows.map((r) => r.id),
      ),
    )
}

/** Runs `work` over `items`, at most `limit` at a time. */
async function eachLimited<T>(
  items: readonly T[],
  limit: number,
  work: (item: T) => Promise<void>,
): Promise<void> {
  let next = 0
  const worker = async () => {
    while (next < items.length) await work(items[next++] as T)
  }
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker))
}
