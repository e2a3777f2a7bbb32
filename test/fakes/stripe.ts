import { randomBytes } from 'node:crypto'
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import Stripe from 'stripe'
import { answerLate, LATE_ANSWER_MS } from './outage.js'

// A local Stripe for tests: an HTTP server that speaks Stripe's wire format
// as the real `stripe` client sends it (form-encoded bodies with bracketed
// keys, Bearer auth, Idempotency-Key, expand[]), with objects shaped like
// Stripe's (PaymentIntent, Charge, BalanceTransaction, Refund, Dispute,
// Event), and controls that play the buyer, the bank and Stripe's webhooks.
//
// Point the real client at it with new Stripe(key, { host, port, protocol: 'http' })
// (StripeGateway: apiBase = fake.url).

export const FAKE_STRIPE_API_VERSION = '2026-10-28.endive'

const BODY_BYTES_MAX = 1024 * 1024
const DOCS = 'https://stripe.com/docs/error-codes'

type Json = Record<string, any>

export interface StripeEvent {
  id: string
  object: 'event'
  api_version: string
  created: number
  data: { object: Json; previous_attributes?: Json }
  livemode: false
  pending_webhooks: number
  request: { id: string | null; idempotency_key: string | null }
  type: string
}

/** 'late': requests are carried out, but answered only LATE_ANSWER_MS later (after the client gave up). */
export type Outage = '5xx' | 'timeout' | 'late' | null

export interface RecordedRequest {
  method: string
  path: string
  status: number | null
  idempotencyKey: string | null
  stripeVersion: string | null
  /** Answered from the idempotency store. */
  replayed: boolean
  /** The parsed form body (POST) or query (GET). */
  params: Json
}

export interface DeliverOptions {
  /** How many times to POST the same event (at-least-once delivery). Default 1. */
  times?: number
  /** POST all copies at once rather than one after the other. */
  concurrently?: boolean
  /** The signed timestamp, Unix seconds. Default: now. */
  timestamp?: number
  /** forged: signed with another secret. Default valid. */
  signature?: 'valid' | 'forged'
  /** Re-serialize the JSON (other whitespace, same content) after signing. */
  mutateBody?: boolean
}

export interface SignedDelivery {
  /** The body exactly as sent. */
  body: string
  headers: Record<string, string>
}

export interface SucceedOptions {
  /** Stripe's fee on the balance transaction. Default 2.9% + 30. */
  feeMinor?: number
  /** What Stripe reports as received (fakes a mismatch with the order). Default: the intent's amount. */
  amountReceived?: number
  /** The currency Stripe reports for the payment (fakes a mismatch). Default: the intent's. */
  currency?: string
  /** The account's settlement currency for the balance transaction. Default: the payment's. */
  settlementCurrency?: string
}

export interface FakeStripe {
  /** http://127.0.0.1:<port> */
  url: string
  host: string
  port: number
  protocol: 'http'
  /** The API key the fake accepts (Bearer). */
  secretKey: string
  webhookSecret: string
  stop(): Promise<void>

  /** Every API request, in arrival order. */
  requests: RecordedRequest[]
  /** A stored object by id (pi_, ch_, txn_, re_, dp_), as the API would return it unexpanded. */
  object(id: string): Json | undefined
  /** Every PaymentIntent, in creation order. */
  paymentIntents(): Json[]

  /** The buyer paid: a charge and its balance transaction. Events: payment_intent.succeeded, charge.succeeded. */
  succeed(
    piId: string,
    options?: SucceedOptions,
  ): { paymentIntent: Json; charge: Json; events: StripeEvent[] }
  /** A declined attempt; the intent goes back to requires_payment_method. Events: payment_intent.payment_failed, charge.failed. */
  fail(piId: string): { paymentIntent: Json; charge: Json; events: StripeEvent[] }
  /** A bank debit started (status processing). Event: payment_intent.processing. */
  startProcessing(piId: string): { paymentIntent: Json; events: StripeEvent[] }
  /** Canceled (abandoned). Event: payment_intent.canceled. */
  cancel(piId: string): { paymentIntent: Json; events: StripeEvent[] }
  /** A partial or full refund of the intent's charge. Events: charge.refunded, refund.created. */
  refund(piId: string, amountMinor: number): { refund: Json; charge: Json; events: StripeEvent[] }
  /** A chargeback. Events: charge.dispute.created, charge.dispute.funds_withdrawn. */
  openDispute(piId: string, amountMinor: number): { dispute: Json; events: StripeEvent[] }
  /** Events: charge.dispute.closed, and charge.dispute.funds_reinstated when won. */
  closeDispute(disputeId: string, outcome: 'won' | 'lost'): { dispute: Json; events: StripeEvent[] }
  /**
   * '5xx': every API request answers 500; 'timeout': requests get no answer;
   * 'late': requests are carried out but answered LATE_ANSWER_MS later; null: back to normal.
   */
  setOutage(outage: Outage): void

  /** A Stripe Event around a snapshot of `object`. */
  event(type: string, object: Json): StripeEvent
  /** The body and headers Stripe would POST for this event. */
  sign(event: StripeEvent, options?: Omit<DeliverOptions, 'times' | 'concurrently'>): SignedDelivery
  /** POSTs the event to targetUrl as Stripe does; returns the HTTP statuses (0: no answer). */
  deliver(event: StripeEvent, targetUrl: string, options?: DeliverOptions): Promise<number[]>
}

class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly body: Json,
  ) {
    super(String(body.message))
  }
}

interface StoredResponse {
  method: string
  path: string
  paramsKey: string
  status: number
  body: Json
  requestId: string
}

export async function startFakeStripe(options: {
  webhookSecret: string
  secretKey?: string
}): Promise<FakeStripe> {
  const secretKey = options.secretKey ?? `sk_test_fake${randomId(24)}`
  const webhookSecret = options.webhookSecret
  const objects = new Map<string, Json>()
  const intentIds: string[] = []
  const idempotency = new Map<string, StoredResponse>()
  const requests: RecordedRequest[] = []
  const held = new Set<ServerResponse>()
  let outage: Outage = null

  const now = () => Math.floor(Date.now() / 1000)

  const store = (object: Json): Json => {
    objects.set(object.id, object)
    return object
  }

  // ---- API ---------------------------------------------------------------

  const server = createServer((req, res) => {
    handle(req, res).catch((error: unknown) => {
      if (!res.headersSent) {
        send(res, 500, { error: { type: 'api_error', message: `fake Stripe: ${String(error)}` } }, {})
      }
    })
  })

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://fake.stripe')
    const method = req.method ?? 'GET'
    const raw = await readBody(req)
    const record: RecordedRequest = {
      method,
      path: url.pathname,
      status: null,
      idempotencyKey: header(req, 'idempotency-key'),
      stripeVersion: header(req, 'stripe-version'),
      replayed: false,
      params: {},
    }
    requests.push(record)
    const requestId = `req_${randomId(14)}`
    const answer = (status: number, body: Json, extra: Record<string, string> = {}) => {
      record.status = status
      send(res, status, body, {
        'Request-Id': requestId,
        'Stripe-Version': FAKE_STRIPE_API_VERSION,
        ...extra,
      })
    }

    if (outage === 'timeout') {
      held.add(res)
      res.on('close', () => held.delete(res))
      return
    }
    if (outage === 'late') answerLate(res, LATE_ANSWER_MS)
    if (outage === '5xx') {
      answer(500, {
        error: {
          type: 'api_error',
          message: 'An unknown error occurred',
          request_log_url: `https://dashboard.stripe.com/test/logs/${requestId}`,
        },
      })
      return
    }

    const auth = header(req, 'authorization')
    if (auth === null || !auth.startsWith('Bearer ')) {
      answer(401, {
        error: {
          type: 'invalid_request_error',
          message:
            "You did not provide an API key. You need to provide your API key in the Authorization header, using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY').",
        },
      })
      return
    }
    const key = auth.slice('Bearer '.length)
    if (key !== secretKey) {
      answer(401, {
        error: {
          type: 'invalid_request_error',
          message: `Invalid API Key provided: ${key.slice(0, 8)}${'*'.repeat(Math.max(0, key.length - 12))}${key.slice(-4)}`,
        },
      })
      return
    }

    let params: Json
    try {
      if (method === 'POST') {
        const contentType = header(req, 'content-type') ?? ''
        if (raw.length > 0 && !contentType.startsWith('application/x-www-form-urlencoded')) {
          throw invalid(400, 'Invalid request: the body must be application/x-www-form-urlencoded.')
        }
        params = parseForm(raw.toString('utf8'))
      } else {
        params = parseForm(url.search.slice(1))
      }
    } catch (error) {
      if (!(error instanceof ApiError)) throw error
      answer(error.status, { error: error.body })
      return
    }
    record.params = params

    // Idempotency (POST only; Stripe ignores the key on GET and DELETE).
    const idempotencyKey = method === 'POST' ? record.idempotencyKey : null
    const paramsKey = canonical(params)
    if (idempotencyKey !== null) {
      const stored = idempotency.get(idempotencyKey)
      if (stored !== undefined) {
        if (stored.method !== method || stored.path !== url.pathname || stored.paramsKey !== paramsKey) {
          answer(400, {
            error: {
              type: 'idempotency_error',
              message: `Keys for idempotent requests can only be used with the same parameters they were first used with. Try using a key other than '${idempotencyKey}' if you meant to execute a different request.`,
            },
          })
          return
        }
        record.replayed = true
        answer(stored.status, stored.body, {
          'Idempotency-Key': idempotencyKey,
          'Idempotent-Replayed': 'true',
          'Original-Request': stored.requestId,
        })
        return
      }
    }

    let result: { status: number; body: Json; executed: boolean }
    try {
      result = route(method, url.pathname, params)
    } catch (error) {
      if (!(error instanceof ApiError)) throw error
      // Validation failed before the endpoint ran: nothing is saved for the key.
      answer(error.status, { error: { ...error.body, request_log_url: logUrl(requestId) } })
      return
    }
    const { status, body, executed } = result
    if (idempotencyKey !== null && executed) {
      idempotency.set(idempotencyKey, { method, path: url.pathname, paramsKey, status, body, requestId })
    }
    answer(status, body, idempotencyKey === null ? {} : { 'Idempotency-Key': idempotencyKey })
  }

  function route(
    method: string,
    path: string,
    params: Json,
  ): { status: number; body: Json; executed: boolean } {
    const segments = path.split('/').filter((s) => s !== '')
    if (segments[0] === 'v1') {
      const [, collection, id, ...rest] = segments
      if (method === 'POST' && collection === 'payment_intents' && id === undefined) {
        return { status: 200, body: expand(createPaymentIntent(params), params.expand), executed: true }
      }
      if (method === 'GET' && id !== undefined && rest.length === 0) {
        const kind = RETRIEVABLE[collection ?? '']
        if (kind !== undefined) {
          allowOnly(params, ['expand'])
          const object = objects.get(id)
          if (object === undefined || object.object !== kind.object) {
            throw invalid(404, `No such ${kind.name}: '${id}'`, {
              code: 'resource_missing',
              param: kind.param,
            })
          }
          return { status: 200, body: expand(object, params.expand), executed: true }
        }
      }
    }
    throw invalid(404, `Unrecognized request URL (${method}: ${path}). Please see https://stripe.com/docs.`, {
      code: 'resource_missing',
    })
  }

  function createPaymentIntent(params: Json): Json {
    allowOnly(params, [
      'amount',
      'currency',
      'automatic_payment_methods',
      'metadata',
      'description',
      'payment_method_types',
      'capture_method',
      'receipt_email',
      'statement_descriptor_suffix',
      'expand',
    ])
    if (params.amount === undefined) throw missing('amount')
    if (params.currency === undefined) throw missing('currency')
    const amount = integerParam(params.amount, 'amount')
    if (amount < 1 || amount > 99_999_999) {
      throw invalid(400, 'Amount must be between 1 and 99999999.', {
        code: 'amount_too_small',
        param: 'amount',
      })
    }
    const currency = String(params.currency).toLowerCase()
    if (!/^[a-z]{3}$/.test(currency)) {
      throw invalid(400, `Invalid currency: ${currency}.`, { param: 'currency' })
    }
    const metadata = params.metadata ?? {}
    if (typeof metadata !== 'object' || Array.isArray(metadata)) {
      throw invalid(400, 'Invalid object', { param: 'metadata' })
    }
    const apm = params.automatic_payment_methods
    const automatic =
      apm === undefined ? null : { allow_redirects: 'always', enabled: apm.enabled === 'true' }
    const id = `pi_${randomId(24)}`
    intentIds.push(id)
    return store({
      id,
      object: 'payment_intent',
      amount,
      amount_capturable: 0,
      amount_details: { tip: {} },
      amount_received: 0,
      application: null,
      application_fee_amount: null,
      automatic_payment_methods: automatic,
      canceled_at: null,
      cancellation_reason: null,
      capture_method: params.capture_method ?? 'automatic_async',
      client_secret: `${id}_secret_${randomId(25)}`,
      confirmation_method: 'automatic',
      created: now(),
      currency,
      customer: null,
      description: params.description ?? null,
      last_payment_error: null,
      latest_charge: null,
      livemode: false,
      metadata: { ...metadata },
      next_action: null,
      on_behalf_of: null,
      payment_method: null,
      payment_method_options: { card: { request_three_d_secure: 'automatic' } },
      payment_method_types: params.payment_method_types ?? ['card', 'link'],
      processing: null,
      receipt_email: params.receipt_email ?? null,
      review: null,
      setup_future_usage: null,
      shipping: null,
      source: null,
      statement_descriptor: null,
      statement_descriptor_suffix: params.statement_descriptor_suffix ?? null,
      status: 'requires_payment_method',
      transfer_data: null,
      transfer_group: null,
    })
  }

  /** Replaces ids by their objects along each dotted path (expand[]=latest_charge.balance_transaction). */
  function expand(object: Json, paths: unknown): Json {
    const copy = structuredClone(object)
    const list = paths === undefined ? [] : Array.isArray(paths) ? paths : [paths]
    for (const path of list) {
      expandPath(copy, String(path).split('.'))
    }
    return copy
  }

  function expandPath(object: Json, path: string[]): void {
    const [field, ...rest] = path
    if (field === undefined) return
    if (!(field in object)) {
      throw invalid(400, `This property cannot be expanded (${field}).`, { param: 'expand' })
    }
    let value = object[field]
    if (typeof value === 'string') {
      const target = objects.get(value)
      if (target === undefined) return
      value = structuredClone(target)
      object[field] = value
    }
    if (rest.length > 0 && value !== null && typeof value === 'object') expandPath(value, rest)
  }

  // ---- controls ----------------------------------------------------------

  const event = (type: string, object: Json): StripeEvent => ({
    id: `evt_${randomId(24)}`,
    object: 'event',
    api_version: FAKE_STRIPE_API_VERSION,
    created: now(),
    data: { object: structuredClone(object) },
    livemode: false,
    pending_webhooks: 1,
    request: { id: null, idempotency_key: null },
    type,
  })

  const intent = (piId: string): Json => {
    const pi = objects.get(piId)
    if (pi === undefined || pi.object !== 'payment_intent')
      throw new Error(`fake Stripe: no PaymentIntent ${piId}`)
    return pi
  }

  const succeededCharge = (pi: Json): Json => {
    const charge = pi.latest_charge === null ? undefined : objects.get(pi.latest_charge)
    if (pi.status !== 'succeeded' || charge === undefined) {
      throw new Error(`fake Stripe: PaymentIntent ${pi.id} has not succeeded`)
    }
    return charge
  }

  const balanceTransaction = (fields: {
    amount: number
    currency: string
    fee: number
    source: string
    type: string
    reportingCategory: string
    description?: string | null
  }): Json =>
    store({
      id: `txn_${randomId(24)}`,
      object: 'balance_transaction',
      amount: fields.amount,
      available_on: now() + 2 * 86_400,
      created: now(),
      currency: fields.currency,
      description: fields.description ?? null,
      exchange_rate: null,
      fee: fields.fee,
      fee_details:
        fields.fee === 0
          ? []
          : [
              {
                amount: fields.fee,
                application: null,
                currency: fields.currency,
                description: 'Stripe processing fees',
                type: 'stripe_fee',
              },
            ],
      net: fields.amount - fields.fee,
      reporting_category: fields.reportingCategory,
      source: fields.source,
      status: 'pending',
      type: fields.type,
    })

  const newCharge = (pi: Json, fields: Json): Json =>
    store({
      id: `ch_${randomId(24)}`,
      object: 'charge',
      amount: pi.amount,
      amount_captured: 0,
      amount_refunded: 0,
      application: null,
      application_fee: null,
      application_fee_amount: null,
      balance_transaction: null,
      billing_details: { address: null, email: null, name: null, phone: null },
      calculated_statement_descriptor: 'GIFTLEDGER',
      captured: false,
      created: now(),
      currency: pi.currency,
      customer: null,
      description: pi.description,
      disputed: false,
      failure_balance_transaction: null,
      failure_code: null,
      failure_message: null,
      fraud_details: {},
      livemode: false,
      metadata: { ...pi.metadata },
      on_behalf_of: null,
      outcome: null,
      paid: false,
      payment_intent: pi.id,
      payment_method: `pm_${randomId(24)}`,
      payment_method_details: {
        type: 'card',
        card: {
          brand: 'visa',
          country: 'US',
          exp_month: 12,
          exp_year: 2034,
          funding: 'credit',
          last4: '4242',
        },
      },
      receipt_url: null,
      refunded: false,
      review: null,
      status: 'pending',
      transfer_data: null,
      transfer_group: null,
      ...fields,
    })

  function succeed(piId: string, opts: SucceedOptions = {}) {
    const pi = intent(piId)
    if (pi.status === 'succeeded' || pi.status === 'canceled') {
      throw new Error(`fake Stripe: PaymentIntent ${piId} is ${pi.status}`)
    }
    const currency = (opts.currency ?? pi.currency).toLowerCase()
    const received = opts.amountReceived ?? pi.amount
    pi.currency = currency
    const charge = newCharge(pi, {
      amount: received,
      amount_captured: received,
      captured: true,
      currency,
      paid: true,
      status: 'succeeded',
      outcome: {
        network_status: 'approved_by_network',
        reason: null,
        risk_level: 'normal',
        seller_message: 'Payment complete.',
        type: 'authorized',
      },
    })
    const settlement = (opts.settlementCurrency ?? currency).toLowerCase()
    // A settlement in another currency converts at a made-up rate of 0.9.
    const settledAmount = settlement === currency ? received : Math.round(received * 0.9)
    const fee = opts.feeMinor ?? Math.round(settledAmount * 0.029) + 30
    const txn = balanceTransaction({
      amount: settledAmount,
      currency: settlement,
      fee,
      source: charge.id,
      type: 'charge',
      reportingCategory: 'charge',
      description: pi.description,
    })
    if (settlement !== currency) txn.exchange_rate = 0.9
    charge.balance_transaction = txn.id
    Object.assign(pi, {
      status: 'succeeded',
      amount_received: received,
      latest_charge: charge.id,
      last_payment_error: null,
      payment_method: charge.payment_method,
    })
    return {
      paymentIntent: structuredClone(pi),
      charge: structuredClone(charge),
      events: [event('payment_intent.succeeded', pi), event('charge.succeeded', charge)],
    }
  }

  function fail(piId: string) {
    const pi = intent(piId)
    if (pi.status === 'succeeded' || pi.status === 'canceled') {
      throw new Error(`fake Stripe: PaymentIntent ${piId} is ${pi.status}`)
    }
    const charge = newCharge(pi, {
      status: 'failed',
      failure_code: 'card_declined',
      failure_message: 'Your card was declined.',
      outcome: {
        network_status: 'declined_by_network',
        reason: 'generic_decline',
        risk_level: 'normal',
        seller_message: 'The bank did not return any further details with this decline.',
        type: 'issuer_declined',
      },
    })
    Object.assign(pi, {
      status: 'requires_payment_method',
      latest_charge: charge.id,
      payment_method: null,
      last_payment_error: {
        type: 'card_error',
        code: 'card_declined',
        decline_code: 'generic_decline',
        charge: charge.id,
        doc_url: `${DOCS}#card-declined`,
        message: 'Your card was declined.',
        payment_method: { id: charge.payment_method, object: 'payment_method', type: 'card' },
      },
    })
    return {
      paymentIntent: structuredClone(pi),
      charge: structuredClone(charge),
      events: [event('payment_intent.payment_failed', pi), event('charge.failed', charge)],
    }
  }

  function startProcessing(piId: string) {
    const pi = intent(piId)
    if (pi.status !== 'requires_payment_method' && pi.status !== 'requires_confirmation') {
      throw new Error(`fake Stripe: PaymentIntent ${piId} is ${pi.status}`)
    }
    Object.assign(pi, { status: 'processing', last_payment_error: null })
    return { paymentIntent: structuredClone(pi), events: [event('payment_intent.processing', pi)] }
  }

  function cancel(piId: string) {
    const pi = intent(piId)
    if (pi.status === 'succeeded' || pi.status === 'canceled') {
      throw new Error(`fake Stripe: PaymentIntent ${piId} is ${pi.status}`)
    }
    Object.assign(pi, { status: 'canceled', canceled_at: now(), cancellation_reason: 'abandoned' })
    return { paymentIntent: structuredClone(pi), events: [event('payment_intent.canceled', pi)] }
  }

  function refund(piId: string, amountMinor: number) {
    const pi = intent(piId)
    const charge = succeededCharge(pi)
    const refundable = charge.amount_captured - charge.amount_refunded
    if (!Number.isSafeInteger(amountMinor) || amountMinor < 1 || amountMinor > refundable) {
      throw new Error(`fake Stripe: cannot refund ${amountMinor} of ${charge.id} (${refundable} refundable)`)
    }
    const id = `re_${randomId(24)}`
    const txn = balanceTransaction({
      amount: -amountMinor,
      currency: charge.currency,
      fee: 0,
      source: id,
      type: 'refund',
      reportingCategory: 'refund',
    })
    const refundObject = store({
      id,
      object: 'refund',
      amount: amountMinor,
      balance_transaction: txn.id,
      charge: charge.id,
      created: now(),
      currency: charge.currency,
      destination_details: { card: { reference_status: 'pending', type: 'refund' }, type: 'card' },
      metadata: {},
      payment_intent: pi.id,
      reason: 'requested_by_customer',
      receipt_number: null,
      source_transfer_reversal: null,
      status: 'succeeded',
      transfer_reversal: null,
    })
    charge.amount_refunded += amountMinor
    charge.refunded = charge.amount_refunded === charge.amount_captured
    return {
      refund: structuredClone(refundObject),
      charge: structuredClone(charge),
      events: [event('charge.refunded', charge), event('refund.created', refundObject)],
    }
  }

  function openDispute(piId: string, amountMinor: number) {
    const pi = intent(piId)
    const charge = succeededCharge(pi)
    if (!Number.isSafeInteger(amountMinor) || amountMinor < 1 || amountMinor > charge.amount_captured) {
      throw new Error(`fake Stripe: cannot dispute ${amountMinor} of ${charge.id}`)
    }
    const id = `dp_${randomId(24)}`
    const disputeFee = 1500
    const txn = balanceTransaction({
      amount: -amountMinor,
      currency: charge.currency,
      fee: disputeFee,
      source: id,
      type: 'adjustment',
      reportingCategory: 'dispute',
      description: `Chargeback withdrawal for ${charge.id}`,
    })
    const dispute = store({
      id,
      object: 'dispute',
      amount: amountMinor,
      balance_transactions: [objects.get(txn.id)],
      charge: charge.id,
      created: now(),
      currency: charge.currency,
      evidence: {},
      evidence_details: {
        due_by: now() + 7 * 86_400,
        has_evidence: false,
        past_due: false,
        submission_count: 0,
      },
      is_charge_refundable: false,
      livemode: false,
      metadata: {},
      payment_intent: pi.id,
      payment_method_details: { type: 'card', card: { brand: 'visa', network_reason_code: '10.4' } },
      reason: 'fraudulent',
      status: 'needs_response',
    })
    charge.disputed = true
    return {
      dispute: structuredClone(dispute),
      events: [event('charge.dispute.created', dispute), event('charge.dispute.funds_withdrawn', dispute)],
    }
  }

  function closeDispute(disputeId: string, outcome: 'won' | 'lost') {
    const dispute = objects.get(disputeId)
    if (dispute === undefined || dispute.object !== 'dispute')
      throw new Error(`fake Stripe: no dispute ${disputeId}`)
    if (dispute.status === 'won' || dispute.status === 'lost') {
      throw new Error(`fake Stripe: dispute ${disputeId} is already ${dispute.status}`)
    }
    dispute.status = outcome
    const events = [event('charge.dispute.closed', dispute)]
    if (outcome === 'won') {
      const txn = balanceTransaction({
        amount: dispute.amount,
        currency: dispute.currency,
        fee: -1500,
        source: dispute.id,
        type: 'adjustment',
        reportingCategory: 'dispute_reversal',
        description: `Chargeback reversal for ${dispute.charge}`,
      })
      dispute.balance_transactions.push(structuredClone(txn))
      events.push(event('charge.dispute.funds_reinstated', dispute))
    }
    return { dispute: structuredClone(dispute), events }
  }

  // ---- webhooks ----------------------------------------------------------

  function sign(evt: StripeEvent, opts: Omit<DeliverOptions, 'times' | 'concurrently'> = {}): SignedDelivery {
    // Stripe sends its events pretty-printed, two spaces.
    const payload = JSON.stringify(evt, null, 2)
    const secret =
      opts.signature === 'forged' ? `whsec_${randomBytes(24).toString('base64url')}` : webhookSecret
    const signature = Stripe.webhooks.generateTestHeaderString({
      payload,
      secret,
      timestamp: opts.timestamp ?? now(),
    })
    const body = opts.mutateBody ? JSON.stringify(JSON.parse(payload)) : payload
    return {
      body,
      headers: {
        'content-type': 'application/json; charset=utf-8',
        'user-agent': 'Stripe/1.0 (+https://stripe.com/docs/webhooks)',
        'stripe-signature': signature,
      },
    }
  }

  async function deliver(evt: StripeEvent, targetUrl: string, opts: DeliverOptions = {}): Promise<number[]> {
    const times = opts.times ?? 1
    const once = async (): Promise<number> => {
      const { body, headers } = sign(evt, opts)
      try {
        const response = await fetch(targetUrl, { method: 'POST', headers, body })
        await response.arrayBuffer()
        return response.status
      } catch {
        return 0
      }
    }
    if (opts.concurrently) return Promise.all(Array.from({ length: times }, once))
    const statuses: number[] = []
    for (let i = 0; i < times; i++) statuses.push(await once())
    return statuses
  }

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => resolve())
  })
  const port = (server.address() as AddressInfo).port

  return {
    url: `http://127.0.0.1:${port}`,
    host: '127.0.0.1',
    port,
    protocol: 'http',
    secretKey,
    webhookSecret,
    requests,
    async stop() {
      for (const res of held) res.destroy()
      server.closeAllConnections()
      await new Promise<void>((resolve) => server.close(() => resolve()))
    },
    object: (id) => {
      const object = objects.get(id)
      return object === undefined ? undefined : structuredClone(object)
    },
    paymentIntents: () => intentIds.map((id) => structuredClone(objects.get(id) as Json)),
    succeed,
    fail,
    startProcessing,
    cancel,
    refund,
    openDispute,
    closeDispute,
    setOutage(next) {
      outage = next
    },
    event,
    sign,
    deliver,
  }
}

// ---- wire format -------------------------------------------------------------

const RETRIEVABLE: Record<string, { object: string; name: string; param: string }> = {
  payment_intents: { object: 'payment_intent', name: 'payment_intent', param: 'intent' },
  charges: { object: 'charge', name: 'charge', param: 'id' },
  refunds: { object: 'refund', name: 'refund', param: 'refund' },
  disputes: { object: 'dispute', name: 'dispute', param: 'dispute' },
  balance_transactions: { object: 'balance_transaction', name: 'balance transaction', param: 'id' },
}

/**
 * Stripe's form encoding: a[b][c]=v nests objects, a[0]=v and a[]=v make
 * arrays; every leaf value is a string.
 */
export function parseForm(encoded: string): Json {
  const root: Json = {}
  for (const [rawKey, value] of new URLSearchParams(encoded)) {
    const match = /^([^[\]]+)((?:\[[^[\]]*\])*)$/.exec(rawKey)
    if (match === null) throw invalid(400, `Invalid parameter name: ${rawKey}`)
    const keys = [
      match[1] as string,
      ...[...(match[2] ?? '').matchAll(/\[([^[\]]*)\]/g)].map((m) => m[1] as string),
    ]
    let node: any = root
    for (let i = 0; i < keys.length; i++) {
      const key = keys[i] as string
      const last = i === keys.length - 1
      const nextIsIndex = !last && /^\d*$/.test(keys[i + 1] as string)
      const slot = Array.isArray(node) ? (key === '' ? node.length : Number(key)) : key
      if (last) {
        node[slot] = value
      } else {
        node[slot] ??= nextIsIndex ? [] : {}
        node = node[slot]
      }
    }
  }
  return root
}

function canonical(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonical).join(',')}]`
  if (value !== null && typeof value === 'object') {
    return `{${Object.keys(value)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${canonical((value as Json)[k])}`)
      .join(',')}}`
  }
  return JSON.stringify(value)
}

function invalid(status: number, message: string, fields: { code?: string; param?: string } = {}): ApiError {
  return new ApiError(status, {
    type: 'invalid_request_error',
    message,
    ...(fields.code === undefined
      ? {}
      : { code: fields.code, doc_url: `${DOCS}#${fields.code.replace(/_/g, '-')}` }),
    ...(fields.param === undefined ? {} : { param: fields.param }),
  })
}

function missing(param: string): ApiError {
  return invalid(400, `Missing required param: ${param}.`, { code: 'parameter_missing', param })
}

function allowOnly(params: Json, allowed: string[]): void {
  for (const key of Object.keys(params)) {
    if (!allowed.includes(key)) {
      throw invalid(400, `Received unknown parameter: ${key}`, { code: 'parameter_unknown', param: key })
    }
  }
}

function integerParam(value: unknown, param: string): number {
  if (typeof value !== 'string' || !/^-?\d+$/.test(value)) {
    throw invalid(400, `Invalid integer: ${String(value)}`, { code: 'parameter_invalid_integer', param })
  }
  return Number(value)
}

function logUrl(requestId: string): string {
  return `https://dashboard.stripe.com/test/logs/${requestId}`
}

function header(req: IncomingMessage, name: string): string | null {
  const value = req.headers[name]
  return typeof value === 'string' ? value : null
}

async function readBody(req: IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = []
  let size = 0
  for await (const chunk of req) {
    size += (chunk as Buffer).length
    if (size > BODY_BYTES_MAX) throw new Error('request body too large')
    chunks.push(chunk as Buffer)
  }
  return Buffer.concat(chunks)
}

function send(res: ServerResponse, status: number, body: Json, headers: Record<string, string>): void {
  const text = JSON.stringify(body, null, 2)
  res.writeHead(status, {
    'Content-Type': 'application/json',
    'Content-Length': Buffer.byteLength(text),
    ...headers,
  })
  res.end(text)
}

function randomId(length: number): string {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789'
  const bytes = randomBytes(length)
  let id = ''
  for (const byte of bytes) id += alphabet[byte % alphabet.length]
  return id
}
