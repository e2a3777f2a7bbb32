import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import {
  disputeStatusOf,
  STRIPE_API_VERSION,
  StripeGateway,
  StripeRequestError,
} from '../src/payments/stripe.js'
import {
  type CreatePaymentRequest,
  type ProviderEvent,
  ProviderUnavailableError,
  WebhookVerificationError,
} from '../src/payments/types.js'
import { type FakeStripe, type StripeEvent, startFakeStripe } from './fakes/stripe.js'

// StripeGateway against a local fake that speaks Stripe's wire format,
// through the real `stripe` client: requests, idempotency, the objects it
// reads back, errors and outages, and webhook signatures.

const WEBHOOK_SECRET = 'whsec_test_giftledger_5b0d3c2e9f7a41c8b6e2'

let fake: FakeStripe
let gateway: StripeGateway
let receiver: WebhookReceiver

beforeAll(async () => {
  fake = await startFakeStripe({ webhookSecret: WEBHOOK_SECRET })
  gateway = new StripeGateway({ secretKey: fake.secretKey, webhookSecret: WEBHOOK_SECRET, apiBase: fake.url })
  receiver = await startWebhookReceiver(gateway)
})

afterAll(async () => {
  await receiver?.stop()
  await fake?.stop()
})

let orderSeq = 0
function order(overrides: Partial<CreatePaymentRequest> = {}): CreatePaymentRequest {
  orderSeq += 1
  const orderId = `ord_${Date.now()}_${orderSeq}`
  return {
    orderId,
    amountMinor: 1299n,
    currency: 'USD',
    description: '1,300 coins',
    idempotencyKey: `recharge:${orderId}`,
    ...overrides,
  }
}

async function created(overrides: Partial<CreatePaymentRequest> = {}) {
  const request = order(overrides)
  const payment = await gateway.createPayment(request)
  return { request, reference: payment.reference, payment }
}

describe('createPayment', () => {
  it('creates a PaymentIntent for the Payment Element with the order in its metadata', async () => {
    const { request, payment } = await created()
    expect(payment.reference).toMatch(/^pi_/)
    expect(payment.clientSecret).toMatch(new RegExp(`^${payment.reference}_secret_`))
    expect(payment.approvalUrl).toBeNull()

    const sent = fake.requests.filter((r) => r.method === 'POST' && r.path === '/v1/payment_intents').at(-1)
    expect(sent?.params).toEqual({
      amount: '1299',
      currency: 'usd',
      automatic_payment_methods: { enabled: 'true' },
      metadata: { order_id: request.orderId },
      description: '1,300 coins',
    })
    expect(sent?.idempotencyKey).toBe(request.idempotencyKey)
    expect(sent?.stripeVersion).toBe(STRIPE_API_VERSION)

    const stored = fake.object(payment.reference)
    expect(stored).toMatchObject({
      object: 'payment_intent',
      status: 'requires_payment_method',
      livemode: false,
      automatic_payment_methods: { enabled: true },
    })
  })

  it('replays the same PaymentIntent for the same idempotency key', async () => {
    const request = order()
    const first = await gateway.createPayment(request)
    const second = await gateway.createPayment(request)
    expect(second).toEqual(first)
    const forOrder = fake.paymentIntents().filter((pi) => pi.metadata.order_id === request.orderId)
    expect(forOrder).toHaveLength(1)
    const posts = fake.requests.filter((r) => r.idempotencyKey === request.idempotencyKey)
    expect(posts.map((r) => r.replayed)).toEqual([false, true])
  })

  it('refuses the same idempotency key with other parameters (idempotency_error, not retried)', async () => {
    const request = order()
    await gateway.createPayment(request)
    const error = await gateway.createPayment({ ...request, amountMinor: 2599n }).catch((e: unknown) => e)
    expect(error).toBeInstanceOf(StripeRequestError)
    expect(error).not.toBeInstanceOf(ProviderUnavailableError)
    expect(error).toMatchObject({ statusCode: 400, type: 'idempotency_error' })
    expect((error as Error).message).toMatch(/same parameters/)
    expect(fake.requests.filter((r) => r.idempotencyKey === request.idempotencyKey)).toHaveLength(2)
  })

  it('rejects amounts Stripe cannot take before calling it', async () => {
    await expect(gateway.createPayment(order({ amountMinor: 0n }))).rejects.toThrow(RangeError)
    await expect(gateway.createPayment(order({ amountMinor: 2n ** 60n }))).rejects.toThrow(RangeError)
  })
})

describe('retrievePayment', () => {
  it('reads a new PaymentIntent as pending, with the order id and no charge', async () => {
    const { request, reference } = await created()
    expect(await gateway.retrievePayment(reference)).toEqual({
      provider: 'stripe',
      reference,
      state: 'pending',
      amountMinor: 1299n,
      currency: 'USD',
      orderId: request.orderId,
      feeMinor: null,
      refundedMinor: 0n,
      captureId: null,
    })
    const get = fake.requests.at(-1)
    expect(get).toMatchObject({ method: 'GET', path: `/v1/payment_intents/${reference}` })
    expect(get?.params).toEqual({ expand: ['latest_charge.balance_transaction'] })
  })

  it('reads a succeeded payment with what was received, the fee and the charge', async () => {
    const { reference } = await created()
    const { charge } = fake.succeed(reference, { feeMinor: 68 })
    expect(await gateway.retrievePayment(reference)).toMatchObject({
      state: 'succeeded',
      amountMinor: 1299n,
      currency: 'USD',
      feeMinor: 68n,
      refundedMinor: 0n,
      captureId: charge.id,
    })
  })

  it('reports what Stripe says was received, not what was asked for', async () => {
    const { reference } = await created()
    fake.succeed(reference, { amountReceived: 999, currency: 'eur' })
    expect(await gateway.retrievePayment(reference)).toMatchObject({
      state: 'succeeded',
      amountMinor: 999n,
      currency: 'EUR',
      feeMinor: BigInt(Math.round(999 * 0.029) + 30),
    })
  })

  it('leaves the fee unknown when Stripe settles in another currency', async () => {
    const { reference } = await created({ currency: 'EUR' })
    fake.succeed(reference, { settlementCurrency: 'usd' })
    expect(await gateway.retrievePayment(reference)).toMatchObject({ state: 'succeeded', feeMinor: null })
  })

  it('keeps a declined attempt pending (the buyer may retry), and a retry can still succeed', async () => {
    const { reference } = await created()
    fake.fail(reference)
    expect(await gateway.retrievePayment(reference)).toMatchObject({
      state: 'pending',
      amountMinor: 1299n,
      captureId: null,
      feeMinor: null,
    })
    const { charge } = fake.succeed(reference)
    expect(await gateway.retrievePayment(reference)).toMatchObject({
      state: 'succeeded',
      captureId: charge.id,
    })
  })

  it('reads processing as pending and canceled as canceled', async () => {
    const processing = await created()
    fake.startProcessing(processing.reference)
    expect((await gateway.retrievePayment(processing.reference)).state).toBe('pending')

    const abandoned = await created()
    fake.cancel(abandoned.reference)
    expect(await gateway.retrievePayment(abandoned.reference)).toMatchObject({
      state: 'canceled',
      amountMinor: 1299n,
      captureId: null,
    })
  })

  it('adds up partial refunds to the full amount', async () => {
    const { reference } = await created()
    fake.succeed(reference)
    fake.refund(reference, 300)
    expect((await gateway.retrievePayment(reference)).refundedMinor).toBe(300n)
    const { charge } = fake.refund(reference, 999)
    expect(charge).toMatchObject({ amount_refunded: 1299, refunded: true })
    expect(await gateway.retrievePayment(reference)).toMatchObject({
      state: 'succeeded',
      refundedMinor: 1299n,
    })
  })

  it('confirmPayment re-reads the PaymentIntent', async () => {
    const { reference } = await created()
    fake.succeed(reference)
    expect(await gateway.confirmPayment(reference)).toEqual(await gateway.retrievePayment(reference))
  })

  it('turns an unknown PaymentIntent into a request error', async () => {
    const error = await gateway.retrievePayment('pi_doesnotexist').catch((e: unknown) => e)
    expect(error).toBeInstanceOf(StripeRequestError)
    expect(error).toMatchObject({ statusCode: 404, code: 'resource_missing' })
    expect((error as Error).message).toMatch(/No such payment_intent: 'pi_doesnotexist'/)
  })

  it('does not repeat the API key in the error for a wrong key', async () => {
    const wrongKey = 'sk_test_wrongwrongwrongwrong1234'
    const wrong = new StripeGateway({ secretKey: wrongKey, webhookSecret: WEBHOOK_SECRET, apiBase: fake.url })
    const error = await wrong.retrievePayment('pi_any').catch((e: unknown) => e)
    expect(error).toBeInstanceOf(StripeRequestError)
    expect(error).toMatchObject({ statusCode: 401 })
    expect((error as Error).message).toMatch(/Invalid API Key/)
    expect((error as Error).message).not.toContain('1234')
    expect((error as Error).message).not.toContain('sk_test')
  })
})

describe('provider outages', () => {
  it('retries 5xx twice with the same idempotency key, then reports the provider unavailable', async () => {
    const request = order()
    const before = fake.requests.length
    fake.setOutage('5xx')
    try {
      await expect(gateway.createPayment(request)).rejects.toBeInstanceOf(ProviderUnavailableError)
    } finally {
      fake.setOutage(null)
    }
    const attempts = fake.requests.slice(before)
    expect(attempts.map((r) => r.status)).toEqual([500, 500, 500])
    expect(new Set(attempts.map((r) => r.idempotencyKey))).toEqual(new Set([request.idempotencyKey]))

    // Nothing was created during the outage: the same key now creates the payment.
    const payment = await gateway.createPayment(request)
    expect(payment.reference).toMatch(/^pi_/)
  })

  it('reports a timeout as unavailable', async () => {
    const { reference } = await created()
    const impatient = new StripeGateway({
      secretKey: fake.secretKey,
      webhookSecret: WEBHOOK_SECRET,
      apiBase: fake.url,
      timeoutMs: 200,
      maxNetworkRetries: 0,
    })
    fake.setOutage('timeout')
    const started = Date.now()
    try {
      const error = await impatient.retrievePayment(reference).catch((e: unknown) => e)
      expect(error).toBeInstanceOf(ProviderUnavailableError)
      expect((error as Error).message).toMatch(/timeout/)
    } finally {
      fake.setOutage(null)
    }
    expect(Date.now() - started).toBeLessThan(5_000)
  })

  it('reports a refused connection as unavailable', async () => {
    const gone = await startFakeStripe({ webhookSecret: WEBHOOK_SECRET })
    await gone.stop()
    const nowhere = new StripeGateway({
      secretKey: gone.secretKey,
      webhookSecret: WEBHOOK_SECRET,
      apiBase: gone.url,
      maxNetworkRetries: 0,
    })
    await expect(nowhere.retrievePayment('pi_any')).rejects.toBeInstanceOf(ProviderUnavailableError)
  })
})

describe('verifyWebhook', () => {
  async function paidEvents() {
    const { request, reference } = await created()
    return { request, reference, ...fake.succeed(reference) }
  }

  it('accepts a delivery signed with the endpoint secret', async () => {
    const { reference, events } = await paidEvents()
    const [succeeded] = events as [StripeEvent]
    expect(await fake.deliver(succeeded, receiver.url)).toEqual([200])
    const verified = receiver.events.find((e) => e.eventId === succeeded.id)
    expect(verified).toMatchObject({
      provider: 'stripe',
      type: 'payment_intent.succeeded',
      paymentReference: reference,
    })
    expect(verified?.payload).toEqual(succeeded)
  })

  it('accepts every copy of an event delivered more than once, at once', async () => {
    const { events } = await paidEvents()
    const [succeeded] = events as [StripeEvent]
    expect(await fake.deliver(succeeded, receiver.url, { times: 3, concurrently: true })).toEqual([
      200, 200, 200,
    ])
    expect(receiver.events.filter((e) => e.eventId === succeeded.id)).toHaveLength(3)
  })

  it('accepts events in any order', async () => {
    const { reference, events } = await paidEvents()
    const { events: refundEvents } = fake.refund(reference, 100)
    const all = [...refundEvents, ...events].reverse()
    for (const event of all) expect(await fake.deliver(event, receiver.url)).toEqual([200])
  })

  it('rejects a forged signature, a stale timestamp and a re-serialized body', async () => {
    const { events } = await paidEvents()
    const [succeeded] = events as [StripeEvent]
    const stale = Math.floor(Date.now() / 1000) - 301
    expect(await fake.deliver(succeeded, receiver.url, { signature: 'forged' })).toEqual([400])
    expect(await fake.deliver(succeeded, receiver.url, { timestamp: stale })).toEqual([400])
    expect(await fake.deliver(succeeded, receiver.url, { mutateBody: true })).toEqual([400])
    expect(receiver.events.some((e) => e.eventId === succeeded.id)).toBe(false)
    // Just inside the tolerance still passes.
    const recent = Math.floor(Date.now() / 1000) - 280
    expect(await fake.deliver(succeeded, receiver.url, { timestamp: recent })).toEqual([200])
  })

  it('says why, without the secret, the header or the body', async () => {
    const { events } = await paidEvents()
    const [succeeded] = events as [StripeEvent]
    const cases: [Parameters<FakeStripe['sign']>[1], RegExp][] = [
      [{ signature: 'forged' }, /signature does not match/],
      [{ timestamp: Math.floor(Date.now() / 1000) - 3600 }, /tolerance/],
      [{ mutateBody: true }, /signature does not match/],
    ]
    for (const [options, reason] of cases) {
      const { body, headers } = fake.sign(succeeded, options)
      const error = await gateway.verifyWebhook(Buffer.from(body), headers).catch((e: unknown) => e)
      expect(error).toBeInstanceOf(WebhookVerificationError)
      const message = (error as Error).message
      expect(message).toMatch(reason)
      expect(message).not.toContain(WEBHOOK_SECRET)
      expect(message).not.toContain(headers['stripe-signature'] as string)
      expect(message).not.toContain(succeeded.id)
    }
  })

  it('rejects a delivery without a signature header, or with a malformed one', async () => {
    const { events } = await paidEvents()
    const { body, headers } = fake.sign(events[0] as StripeEvent)
    await expect(gateway.verifyWebhook(Buffer.from(body), {})).rejects.toBeInstanceOf(
      WebhookVerificationError,
    )
    await expect(
      gateway.verifyWebhook(Buffer.from(body), { ...headers, 'stripe-signature': 'garbage' }),
    ).rejects.toBeInstanceOf(WebhookVerificationError)
    await expect(gateway.verifyWebhook(Buffer.from(''), headers)).rejects.toBeInstanceOf(
      WebhookVerificationError,
    )
  })

  it('reads the Stripe-Signature header in any case', async () => {
    const { events } = await paidEvents()
    const { body, headers } = fake.sign(events[0] as StripeEvent)
    const event = await gateway.verifyWebhook(Buffer.from(body), {
      'Stripe-Signature': headers['stripe-signature'],
    })
    expect(event.eventId).toBe((events[0] as StripeEvent).id)
  })
})

describe('event mapping', () => {
  async function verify(event: StripeEvent): Promise<ProviderEvent> {
    const { body, headers } = fake.sign(event)
    return gateway.verifyWebhook(Buffer.from(body), headers)
  }

  it('maps PaymentIntent events to the payment and the order', async () => {
    const cases: [string, (pi: string) => { events: StripeEvent[] }][] = [
      ['payment_intent.succeeded', (pi) => fake.succeed(pi)],
      ['payment_intent.payment_failed', (pi) => fake.fail(pi)],
      ['payment_intent.canceled', (pi) => fake.cancel(pi)],
      ['payment_intent.processing', (pi) => fake.startProcessing(pi)],
    ]
    for (const [type, act] of cases) {
      const { request, reference } = await created()
      const event = act(reference).events.find((e) => e.type === type) as StripeEvent
      expect(await verify(event)).toEqual({
        provider: 'stripe',
        eventId: event.id,
        type,
        paymentReference: reference,
        captureId: null,
        orderId: request.orderId,
        refundedMinor: null,
        dispute: null,
        payload: event,
      })
    }
  })

  it('maps charge.succeeded and charge.refunded to the charge and the total refunded', async () => {
    const { request, reference } = await created()
    const paid = fake.succeed(reference)
    const succeeded = paid.events.find((e) => e.type === 'charge.succeeded') as StripeEvent
    expect(await verify(succeeded)).toMatchObject({
      type: 'charge.succeeded',
      paymentReference: reference,
      captureId: paid.charge.id,
      orderId: request.orderId,
      refundedMinor: 0n,
      dispute: null,
    })

    fake.refund(reference, 200)
    const second = fake.refund(reference, 300)
    const refunded = second.events.find((e) => e.type === 'charge.refunded') as StripeEvent
    expect(await verify(refunded)).toMatchObject({
      type: 'charge.refunded',
      paymentReference: reference,
      captureId: paid.charge.id,
      refundedMinor: 500n,
    })
  })

  it('maps refund events (a Refund object) to the charge, leaving the total unknown', async () => {
    const { reference } = await created()
    const { charge } = fake.succeed(reference)
    const { refund, events } = fake.refund(reference, 400)
    const updated = fake.event('charge.refund.updated', { ...refund, status: 'failed' })
    const createdEvent = events.find((e) => e.type === 'refund.created') as StripeEvent
    for (const event of [updated, createdEvent]) {
      expect(await verify(event)).toMatchObject({
        type: event.type,
        paymentReference: reference,
        captureId: charge.id,
        refundedMinor: null,
        dispute: null,
      })
    }
  })

  it('maps dispute events to the charge, the payment and the dispute', async () => {
    const { reference } = await created()
    const { charge } = fake.succeed(reference)
    const opened = fake.openDispute(reference, 1299)
    const disputeId = opened.dispute.id as string
    const updated = fake.event('charge.dispute.updated', { ...opened.dispute, status: 'under_review' })
    const won = fake.closeDispute(disputeId, 'won')

    const expected: Record<string, 'open' | 'won'> = {
      'charge.dispute.created': 'open',
      'charge.dispute.funds_withdrawn': 'open',
      'charge.dispute.updated': 'open',
      'charge.dispute.closed': 'won',
      'charge.dispute.funds_reinstated': 'won',
    }
    const all = [...opened.events, updated, ...won.events]
    expect(all.map((e) => e.type).sort()).toEqual(Object.keys(expected).sort())
    for (const event of all) {
      expect(await verify(event)).toMatchObject({
        type: event.type,
        paymentReference: reference,
        captureId: charge.id,
        refundedMinor: null,
        dispute: { id: disputeId, amountMinor: 1299n, currency: 'USD', status: expected[event.type] },
      })
    }

    const other = await created()
    fake.succeed(other.reference)
    const lostDispute = fake.openDispute(other.reference, 500)
    const lost = fake.closeDispute(lostDispute.dispute.id, 'lost')
    expect(lost.events.map((e) => e.type)).toEqual(['charge.dispute.closed'])
    expect((await verify(lost.events[0] as StripeEvent)).dispute).toEqual({
      id: lostDispute.dispute.id,
      amountMinor: 500n,
      currency: 'USD',
      status: 'lost',
    })
  })

  it('reduces dispute statuses to open, won and lost', () => {
    expect(disputeStatusOf('won')).toBe('won')
    expect(disputeStatusOf('lost')).toBe('lost')
    expect(disputeStatusOf('warning_closed')).toBe('won')
    expect(disputeStatusOf('prevented')).toBe('won')
    for (const status of [
      'needs_response',
      'under_review',
      'warning_needs_response',
      'appeal_under_review',
      'x',
    ]) {
      expect(disputeStatusOf(status)).toBe('open')
    }
  })

  it('verifies events of other types and maps them to nulls', async () => {
    const { reference } = await created()
    const failedCharge = fake.fail(reference).events.find((e) => e.type === 'charge.failed') as StripeEvent
    const customer = fake.event('customer.created', { id: 'cus_123', object: 'customer', metadata: {} })
    for (const event of [failedCharge, customer]) {
      expect(await verify(event)).toEqual({
        provider: 'stripe',
        eventId: event.id,
        type: event.type,
        paymentReference: null,
        captureId: null,
        orderId: null,
        refundedMinor: null,
        dispute: null,
        payload: event,
      })
    }
  })
})

// ---- a webhook endpoint for deliveries -----------------------------------------

interface WebhookReceiver {
  url: string
  events: ProviderEvent[]
  stop(): Promise<void>
}

/** Takes the raw body, byte for byte, as the real route must: 200 when verified, 400 otherwise. */
async function startWebhookReceiver(target: StripeGateway): Promise<WebhookReceiver> {
  const events: ProviderEvent[] = []
  const server: Server = createServer(async (req, res) => {
    const chunks: Buffer[] = []
    for await (const chunk of req) chunks.push(chunk as Buffer)
    const headers: Record<string, string | undefined> = {}
    for (const [name, value] of Object.entries(req.headers)) {
      headers[name] = Array.isArray(value) ? value.join(', ') : value
    }
    try {
      events.push(await target.verifyWebhook(Buffer.concat(chunks), headers))
      res.writeHead(200).end()
    } catch (error) {
      res.writeHead(error instanceof WebhookVerificationError ? 400 : 500).end()
    }
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as AddressInfo
  return {
    url: `http://127.0.0.1:${port}/webhooks/stripe`,
    events,
    stop: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections()
        server.close(() => resolve())
      }),
  }
}
