import Stripe from 'stripe'
import {
  type CreatedPayment,
  type CreatePaymentRequest,
  type DisputeStatus,
  type PaymentGateway,
  type PaymentState,
  type ProviderEvent,
  type ProviderPayment,
  ProviderUnavailableError,
  WebhookVerificationError,
} from './types.js'

// Stripe behind the PaymentGateway interface, through the official client.
// The buyer pays in the browser with the Payment Element (cards, Apple Pay,
// Google Pay: automatic payment methods) and confirms there with Stripe.js;
// the server only creates the PaymentIntent and re-reads it.

/**
 * The API version we speak, pinned to the one stripe@23.1.0 was generated for
 * (its default). Written out rather than taken from the library so that an
 * upgrade of the package cannot change the shape of the objects we read:
 * the type checker rejects this literal once the library moves on.
 */
export const STRIPE_API_VERSION = '2026-10-28.endive' as const

const TIMEOUT_MS_DEFAULT = 10_000
/** The client retries connection errors, 409 and 5xx, with the same idempotency key (0.5 s, 1 s, ... backoff). */
const NETWORK_RETRIES_DEFAULT = 2
/** How old a webhook's signed timestamp may be: Stripe's own default, 5 minutes. */
const WEBHOOK_TOLERANCE_SECONDS_DEFAULT = 300

export interface StripeGatewayOptions {
  secretKey: string
  webhookSecret: string
  /** Another API host (a local fake in tests), e.g. http://127.0.0.1:12111. Default: api.stripe.com. */
  apiBase?: string
  timeoutMs?: number
  maxNetworkRetries?: number
  webhookToleranceSeconds?: number
}

/** A request Stripe refused (4xx other than 409/429): retrying it as it is will not help. */
export class StripeRequestError extends Error {
  override readonly name = 'StripeRequestError'
  constructor(
    message: string,
    readonly statusCode: number | null,
    /** Stripe's error type: invalid_request_error, idempotency_error, card_error, ... */
    readonly type: string | null,
    /** Stripe's error code, e.g. resource_missing, parameter_unknown. */
    readonly code: string | null,
    readonly requestId: string | null,
  ) {
    super(message)
  }
}

export class StripeGateway implements PaymentGateway {
  readonly provider = 'stripe' as const
  private readonly stripe: Stripe
  private readonly webhookSecret: string
  private readonly webhookToleranceSeconds: number

  constructor(options: StripeGatewayOptions) {
    if (options.secretKey.trim() === '') throw new Error('StripeGateway: secretKey is empty')
    if (options.webhookSecret.trim() === '') throw new Error('StripeGateway: webhookSecret is empty')
    this.webhookSecret = options.webhookSecret
    this.webhookToleranceSeconds = options.webhookToleranceSeconds ?? WEBHOOK_TOLERANCE_SECONDS_DEFAULT
    this.stripe = new Stripe(options.secretKey, {
      apiVersion: STRIPE_API_VERSION,
      maxNetworkRetries: options.maxNetworkRetries ?? NETWORK_RETRIES_DEFAULT,
      timeout: options.timeoutMs ?? TIMEOUT_MS_DEFAULT,
      typescript: true,
      ...(options.apiBase === undefined ? {} : apiAddress(options.apiBase)),
    })
  }

  async createPayment(request: CreatePaymentRequest): Promise<CreatedPayment> {
    const amount = toStripeAmount(request.amountMinor)
    const currency = request.currency.toLowerCase()
    const intent = await this.call(() =>
      this.stripe.paymentIntents.create(
        {
          amount,
          currency,
          automatic_payment_methods: { enabled: true },
          metadata: { order_id: request.orderId },
          description: request.description,
        },
        // The same key replays the same PaymentIntent; the same key with other
        // parameters is an idempotency_error (a StripeRequestError).
        { idempotencyKey: request.idempotencyKey },
      ),
    )
    // A replay answers with the first request's object: make sure it is the payment we mean.
    if (
      intent.amount !== amount ||
      intent.currency !== currency ||
      intent.metadata.order_id !== request.orderId
    ) {
      throw new Error(
        `Stripe returned PaymentIntent ${intent.id} for another payment than order ${request.orderId}`,
      )
    }
    return { reference: intent.id, clientSecret: intent.client_secret, approvalUrl: null }
  }

  async retrievePayment(reference: string): Promise<ProviderPayment> {
    const intent = await this.call(() =>
      this.stripe.paymentIntents.retrieve(reference, { expand: ['latest_charge.balance_transaction'] }),
    )
    return paymentFromIntent(intent)
  }

  /** The buyer confirms in the browser with Stripe.js: the server's part is to re-read the PaymentIntent. */
  confirmPayment(reference: string): Promise<ProviderPayment> {
    return this.retrievePayment(reference)
  }

  async verifyWebhook(rawBody: Buffer, headers: Record<string, string | undefined>): Promise<ProviderEvent> {
    const signature = headerValue(headers, 'stripe-signature')
    if (signature === undefined || signature === '') {
      throw new WebhookVerificationError('Stripe webhook: no Stripe-Signature header')
    }
    let event: Stripe.Event
    try {
      event = await this.stripe.webhooks.constructEventAsync(
        rawBody,
        signature,
        this.webhookSecret,
        this.webhookToleranceSeconds,
      )
    } catch (error) {
      throw new WebhookVerificationError(`Stripe webhook not verified: ${verificationReason(error)}`)
    }
    return eventFromStripe(event)
  }

  /** Runs one Stripe call and turns its failures into the gateway's errors. */
  private async call<T>(request: () => Promise<T>): Promise<T> {
    try {
      return await request()
    } catch (error) {
      throw translateError(error)
    }
  }
}

function apiAddress(apiBase: string): { host: string; port: number; protocol: 'http' | 'https' } {
  const url = new URL(apiBase)
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new Error('StripeGateway: apiBase must be an http or https URL')
  }
  // The client always requests /v1/...: a path on the base would be silently dropped.
  if (url.pathname !== '/' && url.pathname !== '') {
    throw new Error('StripeGateway: apiBase must not have a path')
  }
  const protocol = url.protocol === 'http:' ? 'http' : 'https'
  const port = url.port === '' ? (protocol === 'http' ? 80 : 443) : Number(url.port)
  return { host: url.hostname.replace(/^\[(.*)\]$/, '$1'), port, protocol }
}

function toStripeAmount(amountMinor: bigint): number {
  if (amountMinor <= 0n || amountMinor > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw new RangeError(`Stripe amount out of range: ${amountMinor}`)
  }
  return Number(amountMinor)
}

// ---- payments ----------------------------------------------------------------

/**
 * Stripe's PaymentIntent statuses, as recharge sees them. A failed attempt
 * returns the intent to requires_payment_method (with last_payment_error): the
 * buyer may try another card on the same intent, so that is still 'pending'.
 * Stripe never fails an intent for good; one that is given up is canceled
 * (by us or by Stripe), so only `canceled` is final without money and this
 * gateway never reports 'failed'.
 */
export function stateOfIntent(status: Stripe.PaymentIntent.Status): PaymentState {
  switch (status) {
    case 'succeeded':
      return 'succeeded'
    case 'canceled':
      return 'canceled'
    default:
      // requires_payment_method, requires_confirmation, requires_action,
      // requires_capture (we capture automatically), processing (bank debits).
      return 'pending'
  }
}

export function paymentFromIntent(intent: Stripe.PaymentIntent): ProviderPayment {
  const state = stateOfIntent(intent.status)
  const charge = typeof intent.latest_charge === 'object' ? intent.latest_charge : null
  // The charge that money moved on. Earlier failed attempts leave a failed
  // latest_charge behind: refunds and disputes never refer to those.
  const chargeId =
    charge !== null
      ? charge.status === 'succeeded'
        ? charge.id
        : null
      : state === 'succeeded' && typeof intent.latest_charge === 'string'
        ? intent.latest_charge
        : null
  return {
    provider: 'stripe',
    reference: intent.id,
    state,
    amountMinor: BigInt(state === 'succeeded' ? intent.amount_received : intent.amount),
    currency: intent.currency.toUpperCase(),
    orderId: intent.metadata.order_id ?? null,
    feeMinor: chargeId !== null && charge !== null ? feeOfCharge(charge) : null,
    refundedMinor: chargeId !== null && charge !== null ? BigInt(charge.amount_refunded) : 0n,
    captureId: chargeId,
  }
}

/**
 * Stripe's fee from the charge's balance transaction. The balance
 * transaction is in the account's settlement currency, which may differ from
 * the charge's (a EUR charge on a USD account): ProviderPayment.feeMinor is in
 * the payment's currency, so a fee in another currency is reported as unknown.
 */
function feeOfCharge(charge: Stripe.Charge): bigint | null {
  const transaction = charge.balance_transaction
  if (transaction === null || typeof transaction === 'string') return null
  if (transaction.currency.toLowerCase() !== charge.currency.toLowerCase()) return null
  return BigInt(transaction.fee)
}

// ---- webhooks ----------------------------------------------------------------

const PAYMENT_INTENT_EVENTS = new Set([
  'payment_intent.succeeded',
  'payment_intent.payment_failed',
  'payment_intent.canceled',
  'payment_intent.processing',
])
const CHARGE_EVENTS = new Set(['charge.succeeded', 'charge.refunded'])
// charge.refund.updated carries a Refund, not a Charge; so do the refund.* events.
const REFUND_EVENTS = new Set(['charge.refund.updated', 'refund.created', 'refund.updated', 'refund.failed'])
const DISPUTE_EVENTS = new Set([
  'charge.dispute.created',
  'charge.dispute.updated',
  'charge.dispute.closed',
  'charge.dispute.funds_withdrawn',
  'charge.dispute.funds_reinstated',
])

type Fields = Pick<ProviderEvent, 'paymentReference' | 'captureId' | 'orderId' | 'refundedMinor' | 'dispute'>

const NO_FIELDS: Fields = {
  paymentReference: null,
  captureId: null,
  orderId: null,
  refundedMinor: null,
  dispute: null,
}

/** Reduces a verified Stripe event to what recharge needs; types we do not use map to nulls. */
export function eventFromStripe(event: Stripe.Event): ProviderEvent {
  const object = (event.data?.object ?? null) as unknown as Record<string, unknown> | null
  if (typeof event.id !== 'string' || typeof event.type !== 'string' || object === null) {
    throw new WebhookVerificationError('Stripe webhook: not an event (id, type and data.object expected)')
  }
  return {
    provider: 'stripe',
    eventId: event.id,
    type: event.type,
    ...fieldsOf(event.type, object),
    payload: event,
  }
}

function fieldsOf(type: string, object: Record<string, unknown>): Fields {
  const kind = object.object
  if (PAYMENT_INTENT_EVENTS.has(type) && kind === 'payment_intent') {
    return { ...NO_FIELDS, paymentReference: idOf(object.id), orderId: orderIdOf(object) }
  }
  if (CHARGE_EVENTS.has(type) && kind === 'charge') {
    return {
      ...NO_FIELDS,
      paymentReference: idOf(object.payment_intent),
      captureId: idOf(object.id),
      orderId: orderIdOf(object),
      refundedMinor: minorOf(object.amount_refunded),
    }
  }
  if (REFUND_EVENTS.has(type) && kind === 'refund') {
    // A refund knows only its own amount, not the total refunded on the charge:
    // refundedMinor stays unknown, and recharge re-reads the payment.
    return { ...NO_FIELDS, paymentReference: idOf(object.payment_intent), captureId: idOf(object.charge) }
  }
  if (DISPUTE_EVENTS.has(type) && kind === 'dispute') {
    const id = idOf(object.id)
    const amountMinor = minorOf(object.amount)
    const currency = typeof object.currency === 'string' ? object.currency.toUpperCase() : null
    return {
      ...NO_FIELDS,
      paymentReference: idOf(object.payment_intent),
      captureId: idOf(object.charge),
      orderId: orderIdOf(object),
      dispute:
        id !== null && amountMinor !== null && currency !== null
          ? { id, amountMinor, currency, status: disputeStatusOf(object.status) }
          : null,
    }
  }
  return NO_FIELDS
}

/**
 * Stripe's dispute statuses, reduced. won and lost are final. An inquiry
 * closed without a chargeback (warning_closed) and a dispute prevented before
 * it became one (prevented: the charge is refunded instead, which arrives as
 * its own refund event) leave the money where it was: 'won'. Everything else
 * (needs_response, under_review, warning_*, appeal_*) is 'open'.
 */
export function disputeStatusOf(status: unknown): DisputeStatus {
  switch (status) {
    case 'won':
    case 'warning_closed':
    case 'prevented':
      return 'won'
    case 'lost':
      return 'lost'
    default:
      return 'open'
  }
}

/** An id, or the id of an expanded object. */
function idOf(value: unknown): string | null {
  if (typeof value === 'string') return value
  if (typeof value === 'object' && value !== null && typeof (value as { id?: unknown }).id === 'string') {
    return (value as { id: string }).id
  }
  return null
}

function orderIdOf(object: Record<string, unknown>): string | null {
  const metadata = object.metadata
  if (typeof metadata !== 'object' || metadata === null) return null
  const orderId = (metadata as Record<string, unknown>).order_id
  return typeof orderId === 'string' && orderId !== '' ? orderId : null
}

function minorOf(value: unknown): bigint | null {
  return typeof value === 'number' && Number.isSafeInteger(value) ? BigInt(value) : null
}

function headerValue(headers: Record<string, string | undefined>, name: string): string | undefined {
  const direct = headers[name]
  if (direct !== undefined) return direct
  for (const [key, value] of Object.entries(headers)) {
    if (key.toLowerCase() === name) return value
  }
  return undefined
}

/** Why a delivery failed verification, without the header, the body or the secret. */
function verificationReason(error: unknown): string {
  if (error instanceof Stripe.errors.StripeSignatureVerificationError) {
    if (/tolerance/i.test(error.message)) return 'timestamp outside the tolerance'
    if (/no signatures found matching/i.test(error.message)) return 'signature does not match the body'
    if (/no signatures found/i.test(error.message)) return 'no v1 signature in the header'
    if (/timestamp/i.test(error.message)) return 'malformed Stripe-Signature header'
    if (/payload/i.test(error.message)) return 'empty body'
    return 'invalid signature'
  }
  if (error instanceof SyntaxError) return 'body is not JSON'
  return 'not a webhook event'
}

// ---- errors ------------------------------------------------------------------

/**
 * Stripe's failures as the gateway's: no answer (connection errors, timeouts),
 * 5xx, 409 (a concurrent request with the same idempotency key, or a lock
 * timeout) and 429 (rate limit) are worth retrying later:
 * ProviderUnavailableError. Other 4xx are refusals: StripeRequestError with
 * Stripe's message (API keys in it masked).
 */
export function translateError(error: unknown): Error {
  if (error instanceof Stripe.errors.StripeConnectionError) {
    return new ProviderUnavailableError(`Stripe did not answer: ${redact(error.message)}`)
  }
  if (error instanceof Stripe.errors.StripeError) {
    const status = error.statusCode ?? null
    const message = redact(error.message)
    if (status === null || status >= 500 || status === 409 || status === 429) {
      return new ProviderUnavailableError(
        `Stripe unavailable${status === null ? '' : ` (HTTP ${status})`}: ${message}`,
      )
    }
    return new StripeRequestError(
      `Stripe refused the request (HTTP ${status}, ${error.rawType ?? error.type}${error.code ? `/${error.code}` : ''}): ${message}`,
      status,
      error.rawType ?? null,
      error.code ?? null,
      error.requestId ?? null,
    )
  }
  return error instanceof Error ? error : new Error(String(error))
}

/** Stripe quotes API keys in some messages ("Invalid API Key provided: sk_test_****abcd"). */
function redact(message: string): string {
  return message.replace(/\b(?:sk|rk|pk|whsec)_[A-Za-z0-9_*]+/g, '[key]')
}
