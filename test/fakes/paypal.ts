import {
  generateKeyPairSync,
  type KeyObject,
  randomBytes,
  randomUUID,
  sign,
  verify,
  X509Certificate,
} from 'node:crypto'
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { answerLate, LATE_ANSWER_MS } from './outage.js'

// A local PayPal speaking the REST wire format of the endpoints giftledger
// uses: OAuth client credentials, Orders v2 (create, get, capture), the
// capture resource, and webhook signature verification. Controls play the
// buyer and PayPal's back office (approval, declines, refunds, disputes,
// outages) and return the webhook events PayPal would send; `deliver` signs
// and POSTs them the way PayPal does.
//
// Webhook signatures are real-style: an RSA key pair made at start, a
// self-signed X.509 certificate served at the cert URL, and
//   signature = base64(RSA-SHA256(`${transmissionId}|${transmissionTime}|${webhookId}|${crc32(rawBody)}`))
// PayPal's verify-webhook-signature API receives the *parsed* event
// (`webhook_event`), not the bytes that were signed. The fake keeps the raw
// body it signed for each transmission id; the verify endpoint takes the CRC
// of that raw body when the event it receives is canonically equal to it
// (same JSON values, key order and whitespace aside), and otherwise the CRC of
// `JSON.stringify(webhook_event)` — so a body changed after signing fails,
// and an event nobody signed here verifies only if signed over its
// re-serialized form (what PayPal's own re-serialization would give).

export interface FakePayPalOptions {
  clientId: string
  clientSecret: string
  webhookId: string
  /** `expires_in` of issued access tokens (PayPal: 32400, nine hours). */
  tokenTtlSeconds?: number
}

/** 'late': calls are carried out, but answered only LATE_ANSWER_MS later (after the client gave up). */
export type FakeOutage = '5xx' | 'timeout' | 'late' | null

export interface PayPalWebhookEvent {
  id: string
  event_version: string
  create_time: string
  resource_type: string
  resource_version: string
  event_type: string
  summary: string
  resource: Record<string, any>
  links: Link[]
}

export interface DeliveryOptions {
  /** How many deliveries (each its own transmission: new id, time and signature). Default 1. */
  times?: number
  /** Send them all at once instead of one after another. */
  concurrently?: boolean
  /** The paypal-transmission-time to claim (default: now). */
  transmissionTime?: Date
  /** 'forged': signed by a key that is not PayPal's. Default 'valid'. */
  signature?: 'valid' | 'forged'
  /** Changes the body after it was signed (a tampered delivery). */
  mutateBody?: (rawBody: string) => string
}

export interface SignedDelivery {
  rawBody: Buffer
  headers: Record<string, string>
}

export interface DeliveryResult {
  status: number
  body: string
}

export interface RecordedRequest {
  method: string
  path: string
  paypalRequestId: string | null
}

export interface FakePayPalControls {
  /** The buyer approves the order (as after the approval link): CHECKOUT.ORDER.APPROVED. */
  approve(orderId: string): PayPalWebhookEvent[]
  /** The payment is denied: the order completes with a DECLINED capture; PAYMENT.CAPTURE.DENIED. */
  decline(orderId: string): PayPalWebhookEvent[]
  /** Money arrives as PayPal reports it, whatever the order said: a COMPLETED capture; PAYMENT.CAPTURE.COMPLETED. */
  captureDirectly(orderId: string, money?: { amountMinor?: bigint; currency?: string }): PayPalWebhookEvent[]
  /** The merchant (or support) refunds part or all of a capture: PAYMENT.CAPTURE.REFUNDED. */
  refund(captureId: string, amountMinor: bigint): PayPalWebhookEvent[]
  /** The buyer opens a dispute on a capture: CUSTOMER.DISPUTE.CREATED. */
  openDispute(captureId: string, amountMinor: bigint): PayPalWebhookEvent[]
  /** The dispute moves on (escalated to a claim): CUSTOMER.DISPUTE.UPDATED. */
  escalateDispute(disputeId: string): PayPalWebhookEvent[]
  /** CUSTOMER.DISPUTE.RESOLVED; lost also reverses the disputed amount: PAYMENT.CAPTURE.REVERSED. */
  resolveDispute(disputeId: string, outcome: 'won' | 'lost'): PayPalWebhookEvent[]
  /** The order is voided (abandoned or cancelled at PayPal). No webhook. */
  voidOrder(orderId: string): PayPalWebhookEvent[]
  /** Every order created so far, in creation order (its id, status and our order id). */
  listOrders(): { id: string; status: string; customId: string | null }[]
  /**
   * '5xx': every API call answers 503; 'timeout': no call is answered; 'late':
   * calls are carried out but answered LATE_ANSWER_MS later; null: back to normal.
   */
  setOutage(outage: FakeOutage): void
  /** Every access token issued so far stops working (as if revoked or expired early). */
  revokeTokens(): void
  /** The events API calls produced (a capture through the API) since the last drain. */
  drainEvents(): PayPalWebhookEvent[]
  /** Headers and body of one webhook transmission, signed as PayPal would. */
  signedDelivery(
    event: PayPalWebhookEvent,
    options?: Omit<DeliveryOptions, 'times' | 'concurrently'>,
  ): SignedDelivery
  /** POSTs the event to targetUrl as PayPal's webhook delivery would. */
  deliver(event: PayPalWebhookEvent, targetUrl: string, options?: DeliveryOptions): Promise<DeliveryResult[]>
}

export interface FakePayPal {
  /** http://127.0.0.1:<port>, no trailing slash: the API base. */
  url: string
  /** The certificate URL put into paypal-cert-url. */
  certUrl: string
  controls: FakePayPalControls
  /** Every API request received, in order. */
  requests: RecordedRequest[]
  stop(): Promise<void>
}

interface Link {
  href: string
  rel: string
  method: string
}

interface Money {
  currency_code: string
  value: string
}

interface FakeCapture {
  id: string
  orderId: string
  status: 'COMPLETED' | 'DECLINED' | 'PARTIALLY_REFUNDED' | 'REFUNDED' | 'PENDING'
  amountMinor: bigint
  currency: string
  feeMinor: bigint
  customId: string | null
  refundedMinor: bigint
  createTime: string
  updateTime: string
}

interface FakeRefund {
  id: string
  captureId: string
  amountMinor: bigint
  currency: string
  /** The capture's total refunded after this refund. */
  totalRefundedMinor: bigint
  note: string
  createTime: string
}

interface FakeOrder {
  id: string
  status: 'CREATED' | 'PAYER_ACTION_REQUIRED' | 'APPROVED' | 'COMPLETED' | 'VOIDED'
  intent: string
  referenceId: string
  amountMinor: bigint
  currency: string
  customId: string | null
  description: string | null
  payerAction: boolean
  captureIds: string[]
  refundIds: string[]
  createTime: string
  updateTime: string
}

interface FakeDispute {
  id: string
  captureId: string
  amountMinor: bigint
  currency: string
  status: 'OPEN' | 'UNDER_REVIEW' | 'RESOLVED'
  stage: 'INQUIRY' | 'CHARGEBACK'
  outcome: 'RESOLVED_SELLER_FAVOUR' | 'RESOLVED_BUYER_FAVOUR' | null
  createTime: string
  updateTime: string
}

class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly body: unknown,
  ) {
    super(`HTTP ${status}`)
  }
}

const BODY_BYTES_MAX = 1_000_000
const AUTH_ALGO = 'SHA256withRSA'

export async function startFakePayPal(options: FakePayPalOptions): Promise<FakePayPal> {
  const tokenTtlSeconds = options.tokenTtlSeconds ?? 32_400
  const keys = generateKeyPairSync('rsa', { modulusLength: 2048 })
  const certificatePem = selfSignedCertificate(
    keys.privateKey,
    keys.publicKey,
    'messageverificationcerts.fake',
  )
  const certificate = new X509Certificate(certificatePem)
  const forger = generateKeyPairSync('rsa', { modulusLength: 2048 })
  const certId = `CERT-360caa42-fca2a594-${randomBytes(4).toString('hex')}`

  const tokens = new Set<string>()
  const orders = new Map<string, FakeOrder>()
  const captures = new Map<string, FakeCapture>()
  const refunds = new Map<string, FakeRefund>()
  const disputes = new Map<string, FakeDispute>()
  const replays = new Map<string, { status: number; body: unknown }>()
  const signedBodies = new Map<string, string>()
  const outbox: PayPalWebhookEvent[] = []
  const requests: RecordedRequest[] = []
  const held = new Set<ServerResponse>()
  let outage: FakeOutage = null
  let base = ''

  const now = () => new Date().toISOString().replace(/\.\d{3}Z$/, 'Z')
  const money = (amountMinor: bigint, currency: string): Money => ({
    currency_code: currency,
    value: formatMinor(amountMinor, currency),
  })

  function orderOf(id: string): FakeOrder {
    const order = orders.get(id)
    if (!order) throw new Error(`fake PayPal: no order ${id}`)
    return order
  }
  function captureOf(id: string): FakeCapture {
    const capture = captures.get(id)
    if (!capture) throw new Error(`fake PayPal: no capture ${id}`)
    return capture
  }
  function disputeOf(id: string): FakeDispute {
    const dispute = disputes.get(id)
    if (!dispute) throw new Error(`fake PayPal: no dispute ${id}`)
    return dispute
  }

  // --- wire representations -------------------------------------------------

  function orderJson(order: FakeOrder): Record<string, any> {
    const unit: Record<string, any> = {
      reference_id: order.referenceId,
      amount: money(order.amountMinor, order.currency),
      payee: { email_address: 'merchant@example.com', merchant_id: 'FAKEMERCHANT01' },
    }
    if (order.description !== null) unit.description = order.description
    if (order.customId !== null) unit.custom_id = order.customId
    if (order.captureIds.length > 0) {
      unit.payments = {
        captures: order.captureIds.map((id) => captureJson(captureOf(id), { supplementary: false })),
        ...(order.refundIds.length > 0 && {
          refunds: order.refundIds.map((id) => refundJson(refunds.get(id) as FakeRefund)),
        }),
      }
    }
    const approved = order.status !== 'CREATED' && order.status !== 'PAYER_ACTION_REQUIRED'
    return {
      id: order.id,
      intent: order.intent,
      status: order.status,
      ...(approved && {
        payer: {
          name: { given_name: 'Test', surname: 'Buyer' },
          email_address: 'buyer@example.com',
          payer_id: 'FAKEPAYER0001',
        },
      }),
      purchase_units: [unit],
      create_time: order.createTime,
      update_time: order.updateTime,
      links: orderLinks(order),
    }
  }

  function orderLinks(order: FakeOrder): Link[] {
    const self = `${base}/v2/checkout/orders/${order.id}`
    const links: Link[] = [{ href: self, rel: 'self', method: 'GET' }]
    if (order.status === 'CREATED' || order.status === 'PAYER_ACTION_REQUIRED') {
      links.push({
        href: `${base}/checkoutnow?token=${order.id}`,
        rel: order.payerAction ? 'payer-action' : 'approve',
        method: 'GET',
      })
      links.push({ href: self, rel: 'update', method: 'PATCH' })
    }
    if (order.status === 'APPROVED') links.push({ href: `${self}/capture`, rel: 'capture', method: 'POST' })
    return links
  }

  function captureJson(
    capture: FakeCapture,
    { supplementary }: { supplementary: boolean },
  ): Record<string, any> {
    const self = `${base}/v2/payments/captures/${capture.id}`
    const settled = capture.status !== 'DECLINED' && capture.status !== 'PENDING'
    return {
      id: capture.id,
      status: capture.status,
      ...(capture.status === 'DECLINED' && { status_details: { reason: 'DECLINED_BY_RISK_FRAUD_FILTERS' } }),
      amount: money(capture.amountMinor, capture.currency),
      final_capture: true,
      seller_protection: {
        status: 'ELIGIBLE',
        dispute_categories: ['ITEM_NOT_RECEIVED', 'UNAUTHORIZED_TRANSACTION'],
      },
      ...(settled && {
        seller_receivable_breakdown: {
          gross_amount: money(capture.amountMinor, capture.currency),
          paypal_fee: money(capture.feeMinor, capture.currency),
          net_amount: money(capture.amountMinor - capture.feeMinor, capture.currency),
        },
      }),
      ...(capture.customId !== null && { custom_id: capture.customId }),
      ...(supplementary && { supplementary_data: { related_ids: { order_id: capture.orderId } } }),
      links: [
        { href: self, rel: 'self', method: 'GET' },
        { href: `${self}/refund`, rel: 'refund', method: 'POST' },
        { href: `${base}/v2/checkout/orders/${capture.orderId}`, rel: 'up', method: 'GET' },
      ],
      create_time: capture.createTime,
      update_time: capture.updateTime,
    }
  }

  function refundJson(refund: FakeRefund): Record<string, any> {
    return {
      id: refund.id,
      status: 'COMPLETED',
      amount: money(refund.amountMinor, refund.currency),
      note_to_payer: refund.note,
      seller_payable_breakdown: {
        gross_amount: money(refund.amountMinor, refund.currency),
        paypal_fee: money(0n, refund.currency),
        net_amount: money(refund.amountMinor, refund.currency),
        total_refunded_amount: money(refund.totalRefundedMinor, refund.currency),
      },
      links: [
        { href: `${base}/v2/payments/refunds/${refund.id}`, rel: 'self', method: 'GET' },
        { href: `${base}/v2/payments/captures/${refund.captureId}`, rel: 'up', method: 'GET' },
      ],
      create_time: refund.createTime,
      update_time: refund.createTime,
    }
  }

  function disputeJson(dispute: FakeDispute): Record<string, any> {
    const capture = captureOf(dispute.captureId)
    return {
      dispute_id: dispute.id,
      create_time: dispute.createTime,
      update_time: dispute.updateTime,
      disputed_transactions: [
        {
          seller_transaction_id: dispute.captureId,
          seller: { merchant_id: 'FAKEMERCHANT01' },
          create_time: capture.createTime,
          transaction_status: 'COMPLETED',
          gross_amount: money(capture.amountMinor, capture.currency),
          custom: capture.customId ?? undefined,
        },
      ],
      reason: 'MERCHANDISE_OR_SERVICE_NOT_RECEIVED',
      status: dispute.status,
      dispute_amount: money(dispute.amountMinor, dispute.currency),
      ...(dispute.outcome !== null && {
        dispute_outcome: {
          outcome_code: dispute.outcome,
          amount_refunded: money(dispute.amountMinor, dispute.currency),
        },
      }),
      dispute_life_cycle_stage: dispute.stage,
      dispute_channel: 'INTERNAL',
      links: [{ href: `${base}/v1/customer/disputes/${dispute.id}`, rel: 'self', method: 'GET' }],
    }
  }

  function event(eventType: string, resourceType: string, resource: Record<string, any>, summary: string) {
    const webhookEvent: PayPalWebhookEvent = {
      id: `WH-${paypalId()}-${paypalId()}`,
      event_version: '1.0',
      create_time: new Date().toISOString(),
      resource_type: resourceType,
      resource_version: resourceType === 'dispute' ? '1.0' : '2.0',
      event_type: eventType,
      summary,
      resource,
      links: [],
    }
    webhookEvent.links = [
      { href: `${base}/v1/notifications/webhooks-events/${webhookEvent.id}`, rel: 'self', method: 'GET' },
    ]
    return webhookEvent
  }

  function captureEvent(type: string, capture: FakeCapture): PayPalWebhookEvent {
    const amount = `${formatMinor(capture.amountMinor, capture.currency)} ${capture.currency}`
    return event(
      type,
      'capture',
      captureJson(capture, { supplementary: true }),
      `Payment ${type} for ${amount}`,
    )
  }

  // --- state changes shared by the API and the controls ----------------------

  function addCapture(
    order: FakeOrder,
    status: FakeCapture['status'],
    amountMinor: bigint,
    currency: string,
  ): FakeCapture {
    const time = now()
    const capture: FakeCapture = {
      id: paypalId(),
      orderId: order.id,
      status,
      amountMinor,
      currency,
      feeMinor: status === 'DECLINED' ? 0n : fakePayPalFeeMinor(amountMinor, currency),
      customId: order.customId,
      refundedMinor: 0n,
      createTime: time,
      updateTime: time,
    }
    captures.set(capture.id, capture)
    order.captureIds.push(capture.id)
    order.status = 'COMPLETED'
    order.updateTime = time
    return capture
  }

  function addRefund(capture: FakeCapture, amountMinor: bigint, note: string): FakeRefund {
    if (capture.status !== 'COMPLETED' && capture.status !== 'PARTIALLY_REFUNDED') {
      throw new Error(`fake PayPal: capture ${capture.id} is ${capture.status}, nothing to refund`)
    }
    if (amountMinor <= 0n || capture.refundedMinor + amountMinor > capture.amountMinor) {
      throw new Error(`fake PayPal: cannot refund ${amountMinor} of capture ${capture.id}`)
    }
    const time = now()
    capture.refundedMinor += amountMinor
    capture.status = capture.refundedMinor === capture.amountMinor ? 'REFUNDED' : 'PARTIALLY_REFUNDED'
    capture.updateTime = time
    const refund: FakeRefund = {
      id: paypalId(),
      captureId: capture.id,
      amountMinor,
      currency: capture.currency,
      totalRefundedMinor: capture.refundedMinor,
      note,
      createTime: time,
    }
    refunds.set(refund.id, refund)
    orderOf(capture.orderId).refundIds.push(refund.id)
    return refund
  }

  // --- the HTTP API ------------------------------------------------------------

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', base)
    const method = req.method ?? 'GET'
    const raw = await readBody(req)
    const paypalRequestId = header(req, 'paypal-request-id')

    if (method === 'GET' && url.pathname === `/v1/notifications/certs/${certId}`) {
      return send(res, 200, certificatePem, 'application/x-pem-file')
    }
    if (method === 'GET' && url.pathname === '/checkoutnow') {
      // The buyer's approval page: visiting it approves the order.
      const order = orders.get(url.searchParams.get('token') ?? '')
      if (!order) return send(res, 404, 'no such order', 'text/plain')
      if (order.status === 'CREATED' || order.status === 'PAYER_ACTION_REQUIRED') controls.approve(order.id)
      return send(res, 200, `approved ${order.id}`, 'text/plain')
    }

    requests.push({ method, path: url.pathname, paypalRequestId })
    if (outage === 'timeout') {
      held.add(res)
      return
    }
    if (outage === 'late') answerLate(res, LATE_ANSWER_MS)
    if (outage === '5xx') {
      throw new HttpError(503, {
        name: 'SERVICE_UNAVAILABLE',
        message: 'Service Unavailable.',
        debug_id: debugId(),
      })
    }

    if (method === 'POST' && url.pathname === '/v1/oauth2/token')
      return sendJson(res, 200, issueToken(req, raw))
    authenticate(req)

    const replayKey = paypalRequestId === null ? null : `${method} ${url.pathname} ${paypalRequestId}`
    const replay = replayKey === null ? undefined : replays.get(replayKey)
    if (replay) return sendJson(res, replay.status, replay.body)

    let result: { status: number; body: unknown }
    try {
      result = route(method, url.pathname, raw, header(req, 'prefer'))
    } catch (error) {
      // PayPal keeps a request id's answer, errors included (4xx), for the same request id.
      if (error instanceof HttpError && error.status < 500 && replayKey !== null) {
        replays.set(replayKey, { status: error.status, body: error.body })
      }
      throw error
    }
    if (replayKey !== null) replays.set(replayKey, result)
    return sendJson(res, result.status, result.body)
  }

  function route(method: string, path: string, raw: string, prefer: string | null) {
    if (method === 'POST' && path === '/v2/checkout/orders') return createOrder(parseJson(raw), prefer)
    if (method === 'POST' && path === '/v1/notifications/verify-webhook-signature') {
      return { status: 200, body: verifyWebhookSignature(parseJson(raw)) }
    }
    let match = /^\/v2\/checkout\/orders\/([A-Z0-9]+)$/.exec(path)
    if (method === 'GET' && match) return { status: 200, body: orderJson(findOrder(match[1] as string)) }
    match = /^\/v2\/checkout\/orders\/([A-Z0-9]+)\/capture$/.exec(path)
    if (method === 'POST' && match) return captureOrder(findOrder(match[1] as string))
    match = /^\/v2\/payments\/captures\/([A-Z0-9]+)$/.exec(path)
    if (method === 'GET' && match) {
      const capture = captures.get(match[1] as string)
      if (!capture) throw notFound()
      return { status: 200, body: captureJson(capture, { supplementary: true }) }
    }
    throw new HttpError(404, {
      name: 'NOT_FOUND',
      message: 'The specified resource does not exist.',
      debug_id: debugId(),
    })
  }

  function issueToken(req: IncomingMessage, raw: string) {
    const expected = `Basic ${Buffer.from(`${options.clientId}:${options.clientSecret}`).toString('base64')}`
    if (header(req, 'authorization') !== expected) {
      throw new HttpError(401, { error: 'invalid_client', error_description: 'Client Authentication failed' })
    }
    if (new URLSearchParams(raw).get('grant_type') !== 'client_credentials') {
      throw new HttpError(400, {
        error: 'unsupported_grant_type',
        error_description: 'Grant Type is NULL or not supported',
      })
    }
    const token = `A21AA${randomBytes(24).toString('base64url')}`
    tokens.add(token)
    return {
      scope:
        'https://uri.paypal.com/services/payments/payment https://uri.paypal.com/services/applications/webhooks',
      access_token: token,
      token_type: 'Bearer',
      app_id: 'APP-80W284485P519543T',
      expires_in: tokenTtlSeconds,
      nonce: `${new Date().toISOString()}${randomBytes(8).toString('hex')}`,
    }
  }

  function authenticate(req: IncomingMessage): void {
    const authorization = header(req, 'authorization') ?? ''
    const token = authorization.startsWith('Bearer ') ? authorization.slice('Bearer '.length) : ''
    if (!tokens.has(token)) {
      throw new HttpError(401, {
        name: 'AUTHENTICATION_FAILURE',
        message:
          'Authentication failed due to invalid authentication credentials or a missing Authorization header.',
        links: [
          {
            href: 'https://developer.paypal.com/docs/api/overview/#error',
            rel: 'information_link',
          },
        ],
      })
    }
  }

  function createOrder(body: any, prefer: string | null) {
    if (body?.intent !== 'CAPTURE' && body?.intent !== 'AUTHORIZE') {
      throw invalidRequest(
        '/intent',
        body?.intent === undefined ? 'MISSING_REQUIRED_PARAMETER' : 'INVALID_PARAMETER_VALUE',
      )
    }
    const units = body.purchase_units
    if (!Array.isArray(units) || units.length !== 1) {
      // PayPal takes up to ten; the fake models the one giftledger sends.
      throw invalidRequest('/purchase_units', 'INVALID_ARRAY_LENGTH')
    }
    const unit = units[0]
    const currency = unit?.amount?.currency_code
    const value = unit?.amount?.value
    if (typeof currency !== 'string' || !/^[A-Z]{3}$/.test(currency)) {
      throw invalidRequest(
        "/purchase_units/@reference_id=='default'/amount/currency_code",
        'INVALID_PARAMETER_VALUE',
      )
    }
    if (typeof value !== 'string' || !/^\d{1,10}(\.\d+)?$/.test(value)) {
      throw invalidRequest(
        "/purchase_units/@reference_id=='default'/amount/value",
        'INVALID_PARAMETER_SYNTAX',
      )
    }
    const amountMinor = parseDecimal(value, currency)
    if (amountMinor === null) {
      throw unprocessable(
        'DECIMAL_PRECISION',
        'If the currency supports decimals, only two decimal place precision is supported.',
      )
    }
    if (amountMinor <= 0n) {
      throw unprocessable('AMOUNT_NOT_POSITIVE', 'Must be greater than zero.')
    }
    const time = now()
    const payerAction = body.payment_source?.paypal !== undefined
    const order: FakeOrder = {
      id: paypalId(),
      status: payerAction ? 'PAYER_ACTION_REQUIRED' : 'CREATED',
      intent: body.intent,
      referenceId: typeof unit.reference_id === 'string' ? unit.reference_id : 'default',
      amountMinor,
      currency,
      customId: typeof unit.custom_id === 'string' ? unit.custom_id : null,
      description: typeof unit.description === 'string' ? unit.description : null,
      payerAction,
      captureIds: [],
      refundIds: [],
      createTime: time,
      updateTime: time,
    }
    orders.set(order.id, order)
    return { status: 201, body: representation(order, prefer) }
  }

  function captureOrder(order: FakeOrder) {
    if (order.status === 'COMPLETED') {
      throw unprocessable(
        'ORDER_ALREADY_CAPTURED',
        "Order already captured.If 'intent=CAPTURE' only one capture per order is allowed.",
      )
    }
    if (order.status === 'VOIDED') {
      throw unprocessable(
        'ORDER_COMPLETED_OR_VOIDED',
        'Order is voided or completed and hence cannot be processed',
      )
    }
    if (order.status !== 'APPROVED') {
      throw unprocessable(
        'ORDER_NOT_APPROVED',
        "Payer has not yet approved the Order for payment. Please redirect the payer to the 'rel':'approve' url returned as part of the HATEOAS links within the Create Order call or provide a valid payment_source in the request.",
      )
    }
    const capture = addCapture(order, 'COMPLETED', order.amountMinor, order.currency)
    outbox.push(captureEvent('PAYMENT.CAPTURE.COMPLETED', capture))
    return { status: 201, body: orderJson(order) }
  }

  function representation(order: FakeOrder, prefer: string | null) {
    if (prefer?.includes('return=representation')) return orderJson(order)
    return { id: order.id, status: order.status, links: orderLinks(order) }
  }

  function findOrder(id: string): FakeOrder {
    const order = orders.get(id)
    if (!order) throw notFound()
    return order
  }

  function verifyWebhookSignature(body: any) {
    const fields = [
      'auth_algo',
      'cert_url',
      'transmission_id',
      'transmission_sig',
      'transmission_time',
      'webhook_id',
    ]
    for (const field of fields) {
      if (typeof body?.[field] !== 'string' || body[field] === '')
        throw invalidRequest(`/${field}`, 'MISSING_REQUIRED_PARAMETER')
    }
    if (body.webhook_event === null || typeof body.webhook_event !== 'object') {
      throw invalidRequest('/webhook_event', 'MISSING_REQUIRED_PARAMETER')
    }
    const failure = { verification_status: 'FAILURE' }
    if (body.webhook_id !== options.webhookId) return failure
    if (body.auth_algo !== AUTH_ALGO) return failure
    if (body.cert_url !== `${base}/v1/notifications/certs/${certId}`) return failure
    const signed = signedBodies.get(body.transmission_id)
    const sameEvent =
      signed !== undefined && canonicalJson(JSON.parse(signed)) === canonicalJson(body.webhook_event)
    const crcSource = sameEvent ? signed : JSON.stringify(body.webhook_event)
    const message = signingInput(body.transmission_id, body.transmission_time, body.webhook_id, crcSource)
    const ok = verify(
      'sha256',
      Buffer.from(message),
      certificate.publicKey,
      Buffer.from(body.transmission_sig, 'base64'),
    )
    return ok ? { verification_status: 'SUCCESS' } : failure
  }

  // --- controls --------------------------------------------------------------

  const controls: FakePayPalControls = {
    approve(orderId) {
      const order = orderOf(orderId)
      if (order.status !== 'CREATED' && order.status !== 'PAYER_ACTION_REQUIRED') {
        throw new Error(`fake PayPal: order ${orderId} is ${order.status}, not awaiting approval`)
      }
      order.status = 'APPROVED'
      order.updateTime = now()
      return [
        event(
          'CHECKOUT.ORDER.APPROVED',
          'checkout-order',
          orderJson(order),
          'An order has been approved by buyer',
        ),
      ]
    },
    decline(orderId) {
      const order = orderOf(orderId)
      if (order.status === 'COMPLETED' || order.status === 'VOIDED') {
        throw new Error(`fake PayPal: order ${orderId} is ${order.status}`)
      }
      const capture = addCapture(order, 'DECLINED', order.amountMinor, order.currency)
      return [captureEvent('PAYMENT.CAPTURE.DENIED', capture)]
    },
    captureDirectly(orderId, given = {}) {
      const order = orderOf(orderId)
      if (order.status === 'COMPLETED' || order.status === 'VOIDED') {
        throw new Error(`fake PayPal: order ${orderId} is ${order.status}`)
      }
      const capture = addCapture(
        order,
        'COMPLETED',
        given.amountMinor ?? order.amountMinor,
        given.currency ?? order.currency,
      )
      return [captureEvent('PAYMENT.CAPTURE.COMPLETED', capture)]
    },
    refund(captureId, amountMinor) {
      const refund = addRefund(captureOf(captureId), amountMinor, 'Refunded by merchant')
      const amount = `${formatMinor(amountMinor, refund.currency)} ${refund.currency}`
      return [
        event(
          'PAYMENT.CAPTURE.REFUNDED',
          'refund',
          refundJson(refund),
          `A ${amount} capture payment was refunded`,
        ),
      ]
    },
    openDispute(captureId, amountMinor) {
      const capture = captureOf(captureId)
      if (amountMinor <= 0n || amountMinor > capture.amountMinor) {
        throw new Error(`fake PayPal: cannot dispute ${amountMinor} of capture ${captureId}`)
      }
      const time = now()
      const dispute: FakeDispute = {
        id: `PP-D-${Math.floor(10_000 + Math.random() * 89_999)}${randomBytes(2).toString('hex').toUpperCase()}`,
        captureId,
        amountMinor,
        currency: capture.currency,
        status: 'OPEN',
        stage: 'INQUIRY',
        outcome: null,
        createTime: time,
        updateTime: time,
      }
      disputes.set(dispute.id, dispute)
      return [event('CUSTOMER.DISPUTE.CREATED', 'dispute', disputeJson(dispute), 'A new dispute opened')]
    },
    escalateDispute(disputeId) {
      const dispute = disputeOf(disputeId)
      dispute.status = 'UNDER_REVIEW'
      dispute.stage = 'CHARGEBACK'
      dispute.updateTime = now()
      return [event('CUSTOMER.DISPUTE.UPDATED', 'dispute', disputeJson(dispute), `A dispute was updated`)]
    },
    resolveDispute(disputeId, outcome) {
      const dispute = disputeOf(disputeId)
      if (dispute.status === 'RESOLVED') throw new Error(`fake PayPal: dispute ${disputeId} is resolved`)
      dispute.status = 'RESOLVED'
      dispute.outcome = outcome === 'won' ? 'RESOLVED_SELLER_FAVOUR' : 'RESOLVED_BUYER_FAVOUR'
      dispute.updateTime = now()
      const events = [
        event('CUSTOMER.DISPUTE.RESOLVED', 'dispute', disputeJson(dispute), 'A dispute was resolved'),
      ]
      if (outcome === 'lost') {
        // The fake models the reversal as a refund of the disputed amount on
        // the capture (resource_type 'refund', as PayPal's REVERSED events are).
        const reversal = addRefund(captureOf(dispute.captureId), dispute.amountMinor, 'Payment reversed')
        const amount = `${formatMinor(reversal.amountMinor, reversal.currency)} ${reversal.currency}`
        events.push(
          event(
            'PAYMENT.CAPTURE.REVERSED',
            'refund',
            refundJson(reversal),
            `A ${amount} capture payment was reversed`,
          ),
        )
      }
      return events
    },
    listOrders() {
      return [...orders.values()].map((o) => ({ id: o.id, status: o.status, customId: o.customId }))
    },
    voidOrder(orderId) {
      const order = orderOf(orderId)
      if (order.status === 'COMPLETED') throw new Error(`fake PayPal: order ${orderId} is completed`)
      order.status = 'VOIDED'
      order.updateTime = now()
      return []
    },
    setOutage(next) {
      outage = next
      if (next !== 'timeout') releaseHeld()
    },
    revokeTokens() {
      tokens.clear()
    },
    drainEvents() {
      return outbox.splice(0, outbox.length)
    },
    signedDelivery(webhookEvent, deliveryOptions = {}) {
      const rawBody = JSON.stringify(webhookEvent)
      const transmissionId = randomUUID()
      const transmissionTime = (deliveryOptions.transmissionTime ?? new Date()).toISOString()
      signedBodies.set(transmissionId, rawBody)
      const key = deliveryOptions.signature === 'forged' ? forger.privateKey : keys.privateKey
      const message = signingInput(transmissionId, transmissionTime, options.webhookId, rawBody)
      const signature = sign('sha256', Buffer.from(message), key).toString('base64')
      const sent = deliveryOptions.mutateBody ? deliveryOptions.mutateBody(rawBody) : rawBody
      return {
        rawBody: Buffer.from(sent),
        headers: {
          'content-type': 'application/json',
          'user-agent': 'PayPal/AUHD-214.0-58289058',
          'paypal-auth-algo': AUTH_ALGO,
          'paypal-auth-version': 'v2',
          'paypal-cert-url': `${base}/v1/notifications/certs/${certId}`,
          'paypal-transmission-id': transmissionId,
          'paypal-transmission-sig': signature,
          'paypal-transmission-time': transmissionTime,
        },
      }
    },
    async deliver(webhookEvent, targetUrl, deliveryOptions = {}) {
      const times = deliveryOptions.times ?? 1
      const once = async (): Promise<DeliveryResult> => {
        const { rawBody, headers } = controls.signedDelivery(webhookEvent, deliveryOptions)
        const response = await fetch(targetUrl, {
          method: 'POST',
          headers,
          body: new Uint8Array(rawBody),
          signal: AbortSignal.timeout(10_000),
        })
        return { status: response.status, body: await response.text() }
      }
      if (deliveryOptions.concurrently) return Promise.all(Array.from({ length: times }, once))
      const results: DeliveryResult[] = []
      for (let i = 0; i < times; i++) results.push(await once())
      return results
    },
  }

  function releaseHeld() {
    for (const res of held) res.destroy()
    held.clear()
  }

  const server: Server = createServer((req, res) => {
    handle(req, res).catch((error: unknown) => {
      if (res.headersSent) return
      if (error instanceof HttpError) return sendJson(res, error.status, error.body)
      sendJson(res, 500, {
        name: 'INTERNAL_SERVER_ERROR',
        message: 'An internal server error occurred.',
        debug_id: debugId(),
      })
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`

  return {
    url: base,
    certUrl: `${base}/v1/notifications/certs/${certId}`,
    controls,
    requests,
    async stop() {
      releaseHeld()
      server.closeAllConnections()
      await new Promise<void>((resolve) => server.close(() => resolve()))
    },
  }
}

// --- wire helpers --------------------------------------------------------------

function header(req: IncomingMessage, name: string): string | null {
  const value = req.headers[name]
  return typeof value === 'string' ? value : null
}

async function readBody(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = []
  let size = 0
  for await (const chunk of req) {
    size += (chunk as Buffer).length
    if (size > BODY_BYTES_MAX)
      throw new HttpError(413, { name: 'REQUEST_ENTITY_TOO_LARGE', message: 'Too large' })
    chunks.push(chunk as Buffer)
  }
  return Buffer.concat(chunks).toString('utf8')
}

function parseJson(raw: string): any {
  try {
    return JSON.parse(raw)
  } catch {
    throw new HttpError(400, {
      name: 'INVALID_REQUEST',
      message: 'Request is not well-formed, syntactically incorrect, or violates schema.',
      debug_id: debugId(),
      details: [
        {
          field: '/',
          location: 'body',
          issue: 'MALFORMED_REQUEST_JSON',
          description: 'The request JSON is not well formed.',
        },
      ],
    })
  }
}

function send(res: ServerResponse, status: number, body: string, contentType: string) {
  res.writeHead(status, { 'content-type': contentType, 'content-length': Buffer.byteLength(body) })
  res.end(body)
}

function sendJson(res: ServerResponse, status: number, body: unknown) {
  const text = JSON.stringify(body)
  res.writeHead(status, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(text),
    'paypal-debug-id': debugId(),
  })
  res.end(text)
}

function invalidRequest(field: string, issue: string): HttpError {
  return new HttpError(400, {
    name: 'INVALID_REQUEST',
    message: 'Request is not well-formed, syntactically incorrect, or violates schema.',
    debug_id: debugId(),
    details: [{ field, location: 'body', issue, description: `${issue} at ${field}` }],
    links: [
      { href: `https://developer.paypal.com/docs/api/orders/v2/#error-${issue}`, rel: 'information_link' },
    ],
  })
}

function unprocessable(issue: string, description: string): HttpError {
  return new HttpError(422, {
    name: 'UNPROCESSABLE_ENTITY',
    message:
      'The requested action could not be performed, semantically incorrect, or failed business validation.',
    debug_id: debugId(),
    details: [{ issue, description }],
    links: [
      {
        href: `https://developer.paypal.com/docs/api/orders/v2/#error-${issue}`,
        rel: 'information_link',
        method: 'GET',
      },
    ],
  })
}

function notFound(): HttpError {
  return new HttpError(404, {
    name: 'RESOURCE_NOT_FOUND',
    message: 'The specified resource does not exist.',
    debug_id: debugId(),
    details: [
      {
        issue: 'INVALID_RESOURCE_ID',
        description: 'Specified resource ID does not exist. Please check the resource ID and try again.',
      },
    ],
  })
}

function paypalId(): string {
  const alphabet = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ'
  return Array.from(randomBytes(17), (b) => alphabet[b % alphabet.length]).join('')
}

function debugId(): string {
  return randomBytes(7).toString('hex').slice(0, 13)
}

// --- money (the fake's own, independent of the gateway's) ------------------------

const ZERO_DIGIT = new Set('BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX VND VUV XAF XOF XPF'.split(' '))
const THREE_DIGIT = new Set('BHD IQD JOD KWD LYD OMR TND'.split(' '))
/** Currencies PayPal takes in whole units only, whatever ISO 4217 says. */
const PAYPAL_WHOLE_UNITS = new Set(['HUF', 'JPY', 'TWD'])

function digitsOf(currency: string): number {
  if (ZERO_DIGIT.has(currency)) return 0
  if (THREE_DIGIT.has(currency)) return 3
  return 2
}

function formatMinor(amountMinor: bigint, currency: string): string {
  const digits = digitsOf(currency)
  const negative = amountMinor < 0n
  const text = (negative ? -amountMinor : amountMinor).toString().padStart(digits + 1, '0')
  const whole = text.slice(0, text.length - digits)
  const fraction = text.slice(text.length - digits)
  return `${negative ? '-' : ''}${whole}${digits > 0 ? `.${fraction}` : ''}`
}

/** null when the value has more decimals than PayPal allows for the currency. */
function parseDecimal(value: string, currency: string): bigint | null {
  const digits = digitsOf(currency)
  const [whole = '0', fraction = ''] = value.split('.')
  if (fraction.length > digits) return null
  if (PAYPAL_WHOLE_UNITS.has(currency) && /[1-9]/.test(fraction)) return null
  return BigInt(whole) * 10n ** BigInt(digits) + BigInt(fraction.padEnd(digits, '0') || '0')
}

/** The fake's fee: 3.49% (half up) plus a fixed fee by the currency's minor digits. */
export function fakePayPalFeeMinor(amountMinor: bigint, currency: string): bigint {
  const fixed = [40n, 4n, 49n, 490n][digitsOf(currency)] ?? 49n
  return (amountMinor * 349n + 5_000n) / 10_000n + fixed
}

// --- webhook signing ---------------------------------------------------------------

function signingInput(
  transmissionId: string,
  transmissionTime: string,
  webhookId: string,
  rawBody: string,
): string {
  return `${transmissionId}|${transmissionTime}|${webhookId}|${crc32(Buffer.from(rawBody))}`
}

/** JSON with object keys sorted, so two serializations of the same values compare equal. */
export function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`
  if (value !== null && typeof value === 'object') {
    const entries = Object.entries(value as Record<string, unknown>)
      .filter(([, v]) => v !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(',')}}`
  }
  return JSON.stringify(value)
}

const CRC_TABLE = Uint32Array.from({ length: 256 }, (_, n) => {
  let c = n
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1
  return c >>> 0
})

/** CRC-32 (IEEE 802.3), unsigned, as PayPal's signing string carries it in decimal. */
export function crc32(bytes: Uint8Array): number {
  let crc = 0xffffffff
  for (const byte of bytes) crc = (CRC_TABLE[(crc ^ byte) & 0xff] as number) ^ (crc >>> 8)
  return (crc ^ 0xffffffff) >>> 0
}

// --- a self-signed X.509 certificate, DER by hand (Node can parse but not make one) ---

function selfSignedCertificate(privateKey: KeyObject, publicKey: KeyObject, commonName: string): string {
  const sha256WithRsa = seq(oid('1.2.840.113549.1.1.11'), Buffer.from([0x05, 0x00]))
  const name = seq(set(seq(oid('2.5.4.3'), der(0x0c, Buffer.from(commonName)))))
  const notBefore = new Date(Date.now() - 24 * 3_600_000)
  const notAfter = new Date(Date.now() + 365 * 24 * 3_600_000)
  const tbs = seq(
    der(0xa0, der(0x02, Buffer.from([0x02]))), // version v3
    der(0x02, Buffer.concat([Buffer.from([0x01]), randomBytes(8)])), // serial, positive
    sha256WithRsa,
    name,
    seq(utcTime(notBefore), utcTime(notAfter)),
    name,
    publicKey.export({ type: 'spki', format: 'der' }),
  )
  const signature = sign('sha256', tbs, privateKey)
  const certificate = seq(tbs, sha256WithRsa, der(0x03, Buffer.concat([Buffer.from([0x00]), signature])))
  const base64 = certificate.toString('base64').replace(/.{64}/g, '$&\n')
  return `-----BEGIN CERTIFICATE-----\n${base64}\n-----END CERTIFICATE-----\n`.replace('\n\n', '\n')
}

function der(tag: number, content: Buffer): Buffer {
  const length = content.length
  let lengthBytes: Buffer
  if (length < 0x80) lengthBytes = Buffer.from([length])
  else {
    const bytes: number[] = []
    for (let n = length; n > 0; n >>= 8) bytes.unshift(n & 0xff)
    lengthBytes = Buffer.from([0x80 | bytes.length, ...bytes])
  }
  return Buffer.concat([Buffer.from([tag]), lengthBytes, content])
}

function seq(...parts: Buffer[]): Buffer {
  return der(0x30, Buffer.concat(parts))
}

function set(...parts: Buffer[]): Buffer {
  return der(0x31, Buffer.concat(parts))
}

function oid(dotted: string): Buffer {
  const [first = 0, second = 0, ...rest] = dotted.split('.').map(Number)
  const bytes = [first * 40 + second]
  for (const arc of rest) {
    const chunk: number[] = []
    for (let n = arc; ; n = Math.floor(n / 128)) {
      chunk.unshift((n % 128) | (chunk.length > 0 ? 0x80 : 0))
      if (n < 128) break
    }
    bytes.push(...chunk)
  }
  return der(0x06, Buffer.from(bytes))
}

function utcTime(date: Date): Buffer {
  const text = date.toISOString().replace(/[-:T]/g, '').slice(2, 14)
  return der(0x17, Buffer.from(`${text}Z`))
}
