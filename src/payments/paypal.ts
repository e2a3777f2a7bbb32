import { z } from 'zod'
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

// PayPal behind the PaymentGateway interface: Orders v2 (create, get,
// capture) and webhook verification through PayPal's
// verify-webhook-signature API, over a small fetch client with a configurable
// base URL (config.paypal.apiBase). docs/PAYPAL.md says why this is not
// @paypal/paypal-server-sdk, and what each mapping reads.

export interface PayPalGatewayOptions {
  clientId: string
  clientSecret: string
  /** The id of the webhook PayPal delivers to (Developer Dashboard): part of every signature. */
  webhookId: string
  /** https://api-m.paypal.com, https://api-m.sandbox.paypal.com, or a local fake. */
  apiBase: string
  /** Per request to PayPal; past it the call fails with ProviderUnavailableError. Default 10 s. */
  timeoutMs?: number
  /** How far a webhook's paypal-transmission-time may be from now. Default 15 minutes. */
  webhookToleranceMs?: number
  /**
   * For a redirect flow: where PayPal sends the buyer back. With them the order
   * carries payment_source.paypal.experience_context and PayPal answers with a
   * 'payer-action' link; without them (PayPal's JavaScript buttons) an 'approve' link.
   */
  returnUrl?: string
  cancelUrl?: string
  /** The fetch to use (tests wrap it to interleave events); default the global fetch. */
  fetch?: typeof fetch
}

/** PayPal answered 4xx: a request PayPal will not accept as it is (retrying the same request does not help). */
export class PayPalApiError extends Error {
  override readonly name = 'PayPalApiError'
  constructor(
    message: string,
    readonly status: number,
    /** PayPal's error name (UNPROCESSABLE_ENTITY, RESOURCE_NOT_FOUND, …) or OAuth error (invalid_client). */
    readonly paypalName: string | null,
    /** The first details[].issue (ORDER_NOT_APPROVED, ORDER_ALREADY_CAPTURED, …). */
    readonly issue: string | null,
    /** What PayPal support asks for. */
    readonly debugId: string | null,
  ) {
    super(message)
  }
}

const TIMEOUT_MS_DEFAULT = 10_000
const WEBHOOK_TOLERANCE_MS_DEFAULT = 15 * 60_000
/** A token is renewed this long before PayPal says it expires (at most half its lifetime). */
const TOKEN_RENEW_MARGIN_MS = 5 * 60_000
const WEBHOOK_BODY_BYTES_MAX = 512 * 1024
/** PayPal's limits: PayPal-Request-Id 108 characters, custom_id and description 127. */
const REQUEST_ID_LENGTH_MAX = 108
const TEXT_FIELD_LENGTH_MAX = 127

/** Capture statuses that mean the money was taken (refunds come after). */
const CAPTURED_STATUSES = new Set(['COMPLETED', 'PARTIALLY_REFUNDED', 'REFUNDED'])
const FAILED_CAPTURE_STATUSES = new Set(['DECLINED', 'FAILED'])
const CAPTURE_EVENT_TYPES = new Set([
  'PAYMENT.CAPTURE.COMPLETED',
  'PAYMENT.CAPTURE.DENIED',
  'PAYMENT.CAPTURE.DECLINED',
  'PAYMENT.CAPTURE.PENDING',
])
const REFUND_EVENT_TYPES = new Set(['PAYMENT.CAPTURE.REFUNDED', 'PAYMENT.CAPTURE.REVERSED'])
const ORDER_EVENT_TYPES = new Set([
  'CHECKOUT.ORDER.APPROVED',
  'CHECKOUT.ORDER.COMPLETED',
  'CHECKOUT.ORDER.SAVED',
])
const DISPUTE_EVENT_TYPES = new Set([
  'CUSTOMER.DISPUTE.CREATED',
  'CUSTOMER.DISPUTE.UPDATED',
  'CUSTOMER.DISPUTE.RESOLVED',
])

// --- PayPal's wire shapes (the fields read here; others are ignored) ---------

const moneySchema = z.object({ currency_code: z.string(), value: z.string() })
const linkSchema = z.object({ href: z.string(), rel: z.string() })
const captureSchema = z.object({
  id: z.string(),
  status: z.string(),
  amount: moneySchema.optional(),
  custom_id: z.string().optional(),
  seller_receivable_breakdown: z.object({ paypal_fee: moneySchema.optional() }).optional(),
  supplementary_data: z
    .object({ related_ids: z.object({ order_id: z.string().optional() }).optional() })
    .optional(),
  links: z.array(linkSchema).optional(),
})
const refundSchema = z.object({
  id: z.string(),
  status: z.string(),
  amount: moneySchema.optional(),
  seller_payable_breakdown: z.object({ total_refunded_amount: moneySchema.optional() }).optional(),
  supplementary_data: z
    .object({
      related_ids: z
        .object({ order_id: z.string().optional(), capture_id: z.string().optional() })
        .optional(),
    })
    .optional(),
  links: z.array(linkSchema).optional(),
})
const orderSchema = z.object({
  id: z.string(),
  status: z.string(),
  purchase_units: z
    .array(
      z.object({
        amount: moneySchema.optional(),
        custom_id: z.string().optional(),
        payments: z
          .object({ captures: z.array(captureSchema).optional(), refunds: z.array(refundSchema).optional() })
          .optional(),
      }),
    )
    .optional(),
  links: z.array(linkSchema).optional(),
})
const disputeSchema = z.object({
  dispute_id: z.string(),
  status: z.string().optional(),
  dispute_amount: moneySchema.optional(),
  dispute_outcome: z.object({ outcome_code: z.string().optional() }).optional(),
  disputed_transactions: z
    .array(
      z.object({
        seller_transaction_id: z.string().optional(),
        custom: z.string().optional(),
        gross_amount: moneySchema.optional(),
      }),
    )
    .optional(),
})
const eventSchema = z.object({ id: z.string().min(1), event_type: z.string().min(1), resource: z.unknown() })
const tokenSchema = z.object({ access_token: z.string().min(1), expires_in: z.number().positive() })
const verificationSchema = z.object({ verification_status: z.string() })
const errorBodySchema = z.object({
  name: z.string().optional(),
  message: z.string().optional(),
  debug_id: z.string().optional(),
  details: z.array(z.object({ issue: z.string().optional(), description: z.string().optional() })).optional(),
  error: z.string().optional(),
  error_description: z.string().optional(),
})

type PayPalOrder = z.infer<typeof orderSchema>
type PayPalCapture = z.infer<typeof captureSchema>
type PayPalRefund = z.infer<typeof refundSchema>
type PayPalMoney = z.infer<typeof moneySchema>

interface CallOptions {
  body?: string
  contentType?: string
  requestId?: string
  prefer?: string
  /** 'basic' for the token endpoint; 'bearer' (default) elsewhere. */
  auth?: 'basic' | 'bearer'
}

export class PayPalGateway implements PaymentGateway {
  readonly provider = 'paypal' as const
  private readonly apiBase: string
  private readonly timeoutMs: number
  private readonly webhookToleranceMs: number
  private readonly fetch: typeof fetch
  private token: { value: string; renewAtMs: number } | null = null
  private tokenRequest: Promise<string> | null = null

  constructor(private readonly options: PayPalGatewayOptions) {
    this.apiBase = options.apiBase.replace(/\/+$/, '')
    this.timeoutMs = options.timeoutMs ?? TIMEOUT_MS_DEFAULT
    this.webhookToleranceMs = options.webhookToleranceMs ?? WEBHOOK_TOLERANCE_MS_DEFAULT
    this.fetch = options.fetch ?? globalThis.fetch
  }

  async createPayment(request: CreatePaymentRequest): Promise<CreatedPayment> {
    checkLength('idempotencyKey', request.idempotencyKey, REQUEST_ID_LENGTH_MAX)
    checkLength('orderId', request.orderId, TEXT_FIELD_LENGTH_MAX)
    if (request.amountMinor <= 0n)
      throw new Error(`PayPal: amount must be positive, got ${request.amountMinor}`)
    const body = {
      intent: 'CAPTURE',
      purchase_units: [
        {
          custom_id: request.orderId,
          description: [...request.description].slice(0, TEXT_FIELD_LENGTH_MAX).join(''),
          amount: {
            currency_code: request.currency,
            value: minorToDecimal(request.amountMinor, request.currency),
          },
        },
      ],
      ...this.paymentSource(),
    }
    const json = await this.call('POST', '/v2/checkout/orders', {
      body: JSON.stringify(body),
      requestId: request.idempotencyKey,
      prefer: 'return=minimal',
    })
    const order = parseWith(orderSchema, json, 'create order')
    const approval =
      order.links?.find((l) => l.rel === 'payer-action') ?? order.links?.find((l) => l.rel === 'approve')
    return { reference: order.id, clientSecret: null, approvalUrl: approval?.href ?? null }
  }

  async retrievePayment(reference: string): Promise<ProviderPayment> {
    return toProviderPayment(await this.getOrder(reference))
  }

  /**
   * Captures an approved order. The order is read first and captured only
   * when APPROVED, so the capture's PayPal-Request-Id (`capture-<order id>`)
   * is never spent on an answer like ORDER_NOT_APPROVED that PayPal might
   * replay for that id after the buyer approves. A capture that lost a race
   * (ORDER_ALREADY_CAPTURED) or an order not approved after all reads the
   * order as it is.
   */
  async confirmPayment(reference: string): Promise<ProviderPayment> {
    const order = await this.getOrder(reference)
    if (order.status !== 'APPROVED') return toProviderPayment(order)
    try {
      const json = await this.call('POST', `/v2/checkout/orders/${encodeURIComponent(reference)}/capture`, {
        body: '{}',
        requestId: `capture-${reference}`,
        prefer: 'return=representation',
      })
      return toProviderPayment(parseWith(orderSchema, json, 'capture order'))
    } catch (error) {
      const settled =
        error instanceof PayPalApiError &&
        error.status === 422 &&
        (error.issue === 'ORDER_ALREADY_CAPTURED' || error.issue === 'ORDER_NOT_APPROVED')
      if (settled) return this.retrievePayment(reference)
      throw error
    }
  }

  async verifyWebhook(rawBody: Buffer, headers: Record<string, string | undefined>): Promise<ProviderEvent> {
    const transmission = readTransmissionHeaders(headers)
    const sentAtMs = Date.parse(transmission.time)
    if (Number.isNaN(sentAtMs)) throw new WebhookVerificationError('paypal-transmission-time is not a date')
    if (Math.abs(Date.now() - sentAtMs) > this.webhookToleranceMs) {
      throw new WebhookVerificationError(`stale delivery: paypal-transmission-time ${transmission.time}`)
    }
    if (rawBody.length > WEBHOOK_BODY_BYTES_MAX) throw new WebhookVerificationError('webhook body too large')
    const text = rawBody.toString('utf8')
    const event = parseEvent(text)

    // PayPal verifies the event it is sent against the signature over the
    // bytes it delivered: send those bytes as they came (spliced in as
    // JSON, not re-serialized), so nothing in them changes on the way.
    const verification =
      `{"auth_algo":${JSON.stringify(transmission.authAlgo)},` +
      `"cert_url":${JSON.stringify(transmission.certUrl)},` +
      `"transmission_id":${JSON.stringify(transmission.id)},` +
      `"transmission_sig":${JSON.stringify(transmission.sig)},` +
      `"transmission_time":${JSON.stringify(transmission.time)},` +
      `"webhook_id":${JSON.stringify(this.options.webhookId)},` +
      `"webhook_event":${text}}`
    let json: unknown
    try {
      json = await this.call('POST', '/v1/notifications/verify-webhook-signature', { body: verification })
    } catch (error) {
      // PayPal refusing the verification request itself (malformed headers) is a failed verification.
      if (error instanceof PayPalApiError && (error.status === 400 || error.status === 422)) {
        throw new WebhookVerificationError(`PayPal refused to verify the delivery: ${error.message}`)
      }
      throw error
    }
    const { verification_status: status } = parseWith(verificationSchema, json, 'verify webhook signature')
    if (status !== 'SUCCESS') throw new WebhookVerificationError(`PayPal says the signature is ${status}`)
    return mapEvent(event)
  }

  // --- HTTP ------------------------------------------------------------------

  private paymentSource() {
    const { returnUrl, cancelUrl } = this.options
    if (returnUrl === undefined && cancelUrl === undefined) return {}
    return {
      payment_source: {
        paypal: {
          experience_context: {
            user_action: 'PAY_NOW',
            shipping_preference: 'NO_SHIPPING',
            ...(returnUrl !== undefined && { return_url: returnUrl }),
            ...(cancelUrl !== undefined && { cancel_url: cancelUrl }),
          },
        },
      },
    }
  }

  private async getOrder(reference: string): Promise<PayPalOrder> {
    const json = await this.call('GET', `/v2/checkout/orders/${encodeURIComponent(reference)}`)
    return parseWith(orderSchema, json, 'get order')
  }

  /** An access token, fetched once for all callers at a time and kept until shortly before it expires. */
  private async accessToken(): Promise<string> {
    if (this.token !== null && Date.now() < this.token.renewAtMs) return this.token.value
    this.tokenRequest ??= this.requestToken().finally(() => {
      this.tokenRequest = null
    })
    return this.tokenRequest
  }

  private async requestToken(): Promise<string> {
    const json = await this.call('POST', '/v1/oauth2/token', {
      auth: 'basic',
      body: 'grant_type=client_credentials',
      contentType: 'application/x-www-form-urlencoded',
    })
    const { access_token: value, expires_in: expiresInSeconds } = parseWith(tokenSchema, json, 'token')
    const lifetimeMs = expiresInSeconds * 1000
    this.token = {
      value,
      renewAtMs: Date.now() + lifetimeMs - Math.min(TOKEN_RENEW_MARGIN_MS, lifetimeMs / 2),
    }
    return value
  }

  private async call(method: 'GET' | 'POST', path: string, options: CallOptions = {}): Promise<unknown> {
    const auth = options.auth ?? 'bearer'
    let token = auth === 'bearer' ? await this.accessToken() : null
    let response = await this.send(method, path, options, token)
    if (response.status === 401 && token !== null) {
      // The token was revoked or expired early: one new token, one more try.
      if (this.token?.value === token) this.token = null
      token = await this.accessToken()
      response = await this.send(method, path, options, token)
    }
    const { status, text } = response
    const json = parseJsonOrNull(text)
    if (status >= 200 && status < 300) return json
    const failure = describeFailure(method, path, status, json)
    if (status >= 500 || status === 429) throw new ProviderUnavailableError(failure.message)
    throw new PayPalApiError(failure.message, status, failure.name, failure.issue, failure.debugId)
  }

  private async send(
    method: string,
    path: string,
    options: CallOptions,
    token: string | null,
  ): Promise<{ status: number; text: string }> {
    const headers: Record<string, string> = { accept: 'application/json' }
    if (token !== null) headers.authorization = `Bearer ${token}`
    else {
      const credentials = `${this.options.clientId}:${this.options.clientSecret}`
      headers.authorization = `Basic ${Buffer.from(credentials).toString('base64')}`
    }
    if (options.body !== undefined) headers['content-type'] = options.contentType ?? 'application/json'
    if (options.requestId !== undefined) headers['paypal-request-id'] = options.requestId
    if (options.prefer !== undefined) headers.prefer = options.prefer
    try {
      const response = await this.fetch(`${this.apiBase}${path}`, {
        method,
        headers,
        body: options.body,
        signal: AbortSignal.timeout(this.timeoutMs),
      })
      return { status: response.status, text: await response.text() }
    } catch (error) {
      const reason =
        error instanceof Error && error.name === 'TimeoutError'
          ? `no answer in ${this.timeoutMs} ms`
          : String(error)
      throw new ProviderUnavailableError(`PayPal ${method} ${path}: ${reason}`)
    }
  }
}

// --- mapping: orders ------------------------------------------------------------

/**
 * The payment as the order says: the capture that took the money (or else the
 * last one) decides the state; its amount, fee and refunds are what was paid.
 */
function toProviderPayment(order: PayPalOrder): ProviderPayment {
  const unit = order.purchase_units?.[0]
  const captures = unit?.payments?.captures ?? []
  const capture = captures.find((c) => CAPTURED_STATUSES.has(c.status)) ?? captures.at(-1) ?? null
  const captured = capture !== null && CAPTURED_STATUSES.has(capture.status)
  const money = (captured ? capture.amount : undefined) ?? unit?.amount
  if (money === undefined) throw new Error(`PayPal order ${order.id} has no amount`)
  const fee = captured ? capture.seller_receivable_breakdown?.paypal_fee : undefined
  return {
    provider: 'paypal',
    reference: order.id,
    state: orderState(order.status, capture),
    amountMinor: decimalToMinor(money.value, money.currency_code),
    currency: money.currency_code,
    orderId: unit?.custom_id ?? capture?.custom_id ?? null,
    feeMinor:
      fee !== undefined && fee.currency_code === money.currency_code
        ? decimalToMinor(fee.value, fee.currency_code)
        : null,
    refundedMinor: captured ? refundedOf(capture, unit?.payments?.refunds ?? [], captures.length) : 0n,
    captureId: capture?.id ?? null,
  }
}

function orderState(orderStatus: string, capture: PayPalCapture | null): PaymentState {
  if (orderStatus === 'VOIDED') return 'canceled'
  if (capture !== null && CAPTURED_STATUSES.has(capture.status)) return 'succeeded'
  if (capture !== null && FAILED_CAPTURE_STATUSES.has(capture.status)) return 'failed'
  // CREATED, SAVED, APPROVED, PAYER_ACTION_REQUIRED, or a PENDING capture.
  return 'pending'
}

/**
 * The completed refunds of the order's payments that point ('up') at this
 * capture — all of them when the order has one capture and a refund has no
 * such link. A capture REFUNDED whose refunds the order does not list counts
 * as refunded in full.
 */
function refundedOf(capture: PayPalCapture, refunds: PayPalRefund[], captureCount: number): bigint {
  let refundedMinor = 0n
  for (const refund of refunds) {
    if (refund.status !== 'COMPLETED' || refund.amount === undefined) continue
    const target = captureIdOfRefund(refund)
    if (target === capture.id || (target === null && captureCount === 1)) {
      refundedMinor += decimalToMinor(refund.amount.value, refund.amount.currency_code)
    }
  }
  if (refundedMinor === 0n && capture.status === 'REFUNDED' && capture.amount !== undefined) {
    return decimalToMinor(capture.amount.value, capture.amount.currency_code)
  }
  return refundedMinor
}

function captureIdOfRefund(refund: PayPalRefund): string | null {
  const up = refund.links?.find((l) => l.rel === 'up')?.href
  const match = up === undefined ? null : /\/v2\/payments\/captures\/([^/?#]+)/.exec(up)
  return match?.[1] ?? refund.supplementary_data?.related_ids?.capture_id ?? null
}

// --- mapping: webhook events -------------------------------------------------------

function readTransmissionHeaders(headers: Record<string, string | undefined>) {
  const lower = new Map<string, string>()
  for (const [name, value] of Object.entries(headers)) {
    if (value !== undefined && value !== '') lower.set(name.toLowerCase(), value)
  }
  const required = (name: string) => {
    const value = lower.get(name)
    if (value === undefined) throw new WebhookVerificationError(`missing header ${name}`)
    return value
  }
  return {
    id: required('paypal-transmission-id'),
    time: required('paypal-transmission-time'),
    sig: required('paypal-transmission-sig'),
    certUrl: required('paypal-cert-url'),
    authAlgo: required('paypal-auth-algo'),
  }
}

/** The event as delivered (all of it: it is the inbox's payload) and the envelope fields read here. */
function parseEvent(text: string): { json: unknown; envelope: z.infer<typeof eventSchema> } {
  let json: unknown
  try {
    json = JSON.parse(text)
  } catch {
    throw new WebhookVerificationError('webhook body is not JSON')
  }
  const parsed = eventSchema.safeParse(json)
  if (!parsed.success) throw new WebhookVerificationError('webhook body is not a PayPal event')
  return { json, envelope: parsed.data }
}

/** A verified event reduced to what recharge needs; fields an event does not carry are null. */
function mapEvent({ json, envelope: event }: ReturnType<typeof parseEvent>): ProviderEvent {
  const base: ProviderEvent = {
    provider: 'paypal',
    eventId: event.id,
    type: event.event_type,
    paymentReference: null,
    captureId: null,
    orderId: null,
    refundedMinor: null,
    dispute: null,
    payload: json,
  }
  const type = event.event_type
  if (CAPTURE_EVENT_TYPES.has(type)) {
    const capture = captureSchema.safeParse(event.resource)
    if (!capture.success) return base
    return {
      ...base,
      captureId: capture.data.id,
      paymentReference:
        capture.data.supplementary_data?.related_ids?.order_id ??
        orderIdFromLinks(capture.data.links) ??
        null,
      orderId: capture.data.custom_id ?? null,
    }
  }
  if (ORDER_EVENT_TYPES.has(type)) {
    const order = orderSchema.safeParse(event.resource)
    if (!order.success) return base
    const unit = order.data.purchase_units?.[0]
    return {
      ...base,
      paymentReference: order.data.id,
      orderId: unit?.custom_id ?? null,
      captureId: unit?.payments?.captures?.[0]?.id ?? null,
    }
  }
  if (REFUND_EVENT_TYPES.has(type)) {
    const refund = refundSchema.safeParse(event.resource)
    if (!refund.success) return base
    return {
      ...base,
      captureId: captureIdOfRefund(refund.data),
      paymentReference: refund.data.supplementary_data?.related_ids?.order_id ?? null,
      refundedMinor: moneyOrNull(refund.data.seller_payable_breakdown?.total_refunded_amount),
    }
  }
  if (DISPUTE_EVENT_TYPES.has(type)) {
    const dispute = disputeSchema.safeParse(event.resource)
    if (!dispute.success) return base
    const transaction = dispute.data.disputed_transactions?.[0]
    const money = dispute.data.dispute_amount ?? transaction?.gross_amount
    const amountMinor = moneyOrNull(money)
    return {
      ...base,
      captureId: transaction?.seller_transaction_id ?? null,
      orderId: transaction?.custom ?? null,
      dispute:
        money === undefined || amountMinor === null
          ? null
          : {
              id: dispute.data.dispute_id,
              amountMinor,
              currency: money.currency_code,
              status: disputeStatus(dispute.data.status, dispute.data.dispute_outcome?.outcome_code),
            },
    }
  }
  return base
}

/**
 * Won or lost once PayPal resolved it, by who kept the money: the seller
 * (RESOLVED_SELLER_FAVOUR; CANCELED_BY_BUYER; RESOLVED_WITH_PAYOUT, PayPal
 * paid the buyer itself) or the buyer (RESOLVED_BUYER_FAVOUR; ACCEPTED, the
 * seller accepted the claim). Anything else stays open.
 */
function disputeStatus(status: string | undefined, outcome: string | undefined): DisputeStatus {
  if (status !== 'RESOLVED') return 'open'
  if (
    outcome === 'RESOLVED_SELLER_FAVOUR' ||
    outcome === 'CANCELED_BY_BUYER' ||
    outcome === 'RESOLVED_WITH_PAYOUT'
  ) {
    return 'won'
  }
  if (outcome === 'RESOLVED_BUYER_FAVOUR' || outcome === 'ACCEPTED') return 'lost'
  return 'open'
}

function orderIdFromLinks(links: { href: string; rel: string }[] | undefined): string | null {
  const up = links?.find((l) => l.rel === 'up')?.href
  const match = up === undefined ? null : /\/v2\/checkout\/orders\/([^/?#]+)/.exec(up)
  return match?.[1] ?? null
}

function moneyOrNull(money: PayPalMoney | undefined): bigint | null {
  if (money === undefined) return null
  try {
    return decimalToMinor(money.value, money.currency_code)
  } catch {
    return null
  }
}

// --- money -----------------------------------------------------------------------

// ISO 4217 minor-unit digits (giftledger's minor units); 2 for any currency not listed.
const ZERO_DIGIT_CURRENCIES = new Set(
  'BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI VND VUV XAF XOF XPF'.split(' '),
)
const THREE_DIGIT_CURRENCIES = new Set('BHD IQD JOD KWD LYD OMR TND'.split(' '))
/** PayPal takes these in whole units though ISO 4217 gives them two digits. */
const PAYPAL_WHOLE_UNIT_CURRENCIES = new Set(['HUF', 'TWD'])

export function currencyDigits(currency: string): number {
  if (ZERO_DIGIT_CURRENCIES.has(currency)) return 0
  if (THREE_DIGIT_CURRENCIES.has(currency)) return 3
  return 2
}

/** Minor units to PayPal's decimal string: 1999n USD → "19.99", 500n JPY → "500", 1234n KWD → "1.234". */
export function minorToDecimal(amountMinor: bigint, currency: string): string {
  const digits = currencyDigits(currency)
  const scale = 10n ** BigInt(digits)
  const negative = amountMinor < 0n
  const magnitude = negative ? -amountMinor : amountMinor
  const whole = magnitude / scale
  const fraction = magnitude % scale
  const sign = negative ? '-' : ''
  if (PAYPAL_WHOLE_UNIT_CURRENCIES.has(currency)) {
    if (fraction !== 0n)
      throw new Error(`PayPal takes ${currency} in whole units only, not ${amountMinor} minor`)
    return `${sign}${whole}`
  }
  return digits === 0 ? `${sign}${whole}` : `${sign}${whole}.${fraction.toString().padStart(digits, '0')}`
}

/** PayPal's decimal string to minor units, exactly: "19.99" USD → 1999n, "500" JPY → 500n. */
export function decimalToMinor(value: string, currency: string): bigint {
  const match = /^(-?)(\d+)(?:\.(\d+))?$/.exec(value)
  if (!match) throw new Error(`PayPal amount "${value}" ${currency} is not a decimal`)
  const [, sign, whole = '0', fraction = ''] = match
  const digits = currencyDigits(currency)
  const kept = fraction.slice(0, digits)
  if (/[^0]/.test(fraction.slice(digits))) {
    throw new Error(`PayPal amount "${value}" ${currency} has more than ${digits} decimals`)
  }
  const minor = BigInt(whole) * 10n ** BigInt(digits) + BigInt(kept.padEnd(digits, '0') || '0')
  return sign === '-' ? -minor : minor
}

// --- helpers -----------------------------------------------------------------------

function checkLength(field: string, value: string, max: number): void {
  if (value.length === 0 || value.length > max)
    throw new Error(`PayPal: ${field} must be 1 to ${max} characters`)
}

function parseJsonOrNull(text: string): unknown {
  if (text === '') return null
  try {
    return JSON.parse(text)
  } catch {
    return null
  }
}

function parseWith<T>(schema: z.ZodType<T>, json: unknown, what: string): T {
  const parsed = schema.safeParse(json)
  if (!parsed.success)
    throw new Error(`PayPal ${what}: unexpected answer (${parsed.error.issues[0]?.message ?? ''})`)
  return parsed.data
}

/** PayPal's error, named without anything we sent (no credentials, no tokens). */
function describeFailure(method: string, path: string, status: number, json: unknown) {
  const parsed = errorBodySchema.safeParse(json)
  const body = parsed.success ? parsed.data : {}
  const name = body.name ?? body.error ?? null
  const issue = body.details?.[0]?.issue ?? null
  const debugId = body.debug_id ?? null
  const text = body.message ?? body.error_description ?? ''
  const message = [
    `PayPal ${method} ${path} answered ${status}`,
    name === null ? '' : ` ${name}`,
    text === '' ? '' : `: ${text}`,
    issue === null ? '' : ` [${issue}]`,
    debugId === null ? '' : ` (debug_id ${debugId})`,
  ].join('')
  return { message, name, issue, debugId }
}
