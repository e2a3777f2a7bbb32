import { createServer, type IncomingMessage } from 'node:http'
import type { AddressInfo } from 'node:net'
import { fc, test as propertyTest } from '@fast-check/vitest'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import {
  decimalToMinor,
  minorToDecimal,
  PayPalApiError,
  PayPalGateway,
  type PayPalGatewayOptions,
} from '../src/payments/paypal.js'
import {
  type CreatePaymentRequest,
  type ProviderEvent,
  ProviderUnavailableError,
  WebhookVerificationError,
} from '../src/payments/types.js'
import {
  crc32,
  type FakePayPal,
  fakePayPalFeeMinor,
  type PayPalWebhookEvent,
  startFakePayPal,
} from './fakes/paypal.js'

const credentials = {
  clientId: 'giftledger-test-client',
  clientSecret: 'test-client-secret-do-not-log',
  webhookId: 'WH-TEST-8PT597110X687430LKGECATA',
}

let fake: FakePayPal
let paypal: PayPalGateway
let receiver: Receiver

function gateway(options: Partial<PayPalGatewayOptions> = {}, on: FakePayPal = fake): PayPalGateway {
  return new PayPalGateway({ ...credentials, apiBase: on.url, timeoutMs: 2_000, ...options })
}

let orderSeq = 0
function request(overrides: Partial<CreatePaymentRequest> = {}): CreatePaymentRequest {
  orderSeq += 1
  const orderId = `rch_${process.pid}_${orderSeq}`
  return {
    orderId,
    amountMinor: 999n,
    currency: 'USD',
    description: '100 coins',
    idempotencyKey: `recharge-${orderId}`,
    ...overrides,
  }
}

/** An order the buyer approved (by visiting the approval link, as a browser would). */
async function approvedOrder(overrides: Partial<CreatePaymentRequest> = {}) {
  const req = request(overrides)
  const created = await paypal.createPayment(req)
  const page = await fetch(created.approvalUrl as string)
  expect(page.status).toBe(200)
  return { req, reference: created.reference }
}

async function capturedOrder(overrides: Partial<CreatePaymentRequest> = {}) {
  const { req, reference } = await approvedOrder(overrides)
  const payment = await paypal.confirmPayment(reference)
  expect(payment.state).toBe('succeeded')
  return { req, reference, captureId: payment.captureId as string }
}

function requestsTo(pathPart: string, since = 0) {
  return fake.requests.slice(since).filter((r) => r.path.includes(pathPart))
}

beforeAll(async () => {
  fake = await startFakePayPal(credentials)
  paypal = gateway()
  receiver = await startReceiver(paypal)
})

afterAll(async () => {
  await receiver?.stop()
  await fake?.stop()
})

describe('money on the wire', () => {
  it.each([
    [1999n, 'USD', '19.99'],
    [5n, 'EUR', '0.05'],
    [100n, 'GBP', '1.00'],
    [500n, 'JPY', '500'],
    [1234n, 'KWD', '1.234'],
    [7n, 'BHD', '0.007'],
    [150000n, 'HUF', '1500'],
  ])('%s minor %s is "%s"', (amountMinor, currency, value) => {
    expect(minorToDecimal(amountMinor, currency)).toBe(value)
    expect(decimalToMinor(value, currency)).toBe(amountMinor)
  })

  it('reads what PayPal writes, trailing zeros and all, and refuses what it cannot hold exactly', () => {
    expect(decimalToMinor('10', 'USD')).toBe(1000n)
    expect(decimalToMinor('10.5', 'USD')).toBe(1050n)
    expect(decimalToMinor('500.00', 'JPY')).toBe(500n)
    expect(decimalToMinor('1500.00', 'HUF')).toBe(150000n)
    expect(() => decimalToMinor('0.001', 'USD')).toThrow(/decimals/)
    expect(() => decimalToMinor('1e3', 'USD')).toThrow(/not a decimal/)
    expect(() => minorToDecimal(150050n, 'HUF')).toThrow(/whole units/)
  })

  propertyTest.prop([fc.bigInt({ min: 0n, max: 10n ** 15n }), fc.constantFrom('USD', 'JPY', 'KWD', 'EUR')])(
    'minor units survive the round trip through the decimal string',
    (amountMinor, currency) => {
      expect(decimalToMinor(minorToDecimal(amountMinor, currency), currency)).toBe(amountMinor)
    },
  )

  it("the fake's CRC-32 is the standard one", () => {
    expect(crc32(Buffer.from('123456789'))).toBe(0xcbf43926)
  })
})

describe('createPayment', () => {
  it('creates a CAPTURE order with our order id and returns its approval link', async () => {
    const req = request({ amountMinor: 1999n })
    const created = await paypal.createPayment(req)
    expect(created.reference).toMatch(/^[A-Z0-9]{17}$/)
    expect(created.clientSecret).toBeNull()
    expect(created.approvalUrl).toBe(`${fake.url}/checkoutnow?token=${created.reference}`)

    const payment = await paypal.retrievePayment(created.reference)
    expect(payment).toEqual({
      provider: 'paypal',
      reference: created.reference,
      state: 'pending',
      amountMinor: 1999n,
      currency: 'USD',
      orderId: req.orderId,
      feeMinor: null,
      refundedMinor: 0n,
      captureId: null,
    })
  })

  it('replays the same order for the same idempotency key (PayPal-Request-Id)', async () => {
    const req = request()
    const first = await paypal.createPayment(req)
    const again = await paypal.createPayment(req)
    const other = await paypal.createPayment({ ...req, idempotencyKey: `${req.idempotencyKey}-2` })
    expect(again).toEqual(first)
    expect(other.reference).not.toBe(first.reference)
    expect(requestsTo('/v2/checkout/orders').map((r) => r.paypalRequestId)).toContain(req.idempotencyKey)
  })

  it('asks for a payer-action link when return and cancel URLs are configured', async () => {
    const redirecting = gateway({
      returnUrl: 'https://app.example/paypal/return',
      cancelUrl: 'https://app.example/x',
    })
    const created = await redirecting.createPayment(request())
    expect(created.approvalUrl).toBe(`${fake.url}/checkoutnow?token=${created.reference}`)
    const order = await (
      await fetch(`${fake.url}/v2/checkout/orders/${created.reference}`, {
        headers: { authorization: `Bearer ${await bearer()}` },
      })
    ).json()
    expect(order.status).toBe('PAYER_ACTION_REQUIRED')
    expect(order.links.map((l: { rel: string }) => l.rel)).toContain('payer-action')
  })

  it.each([
    [500n, 'JPY'],
    [1234n, 'KWD'],
    [250n, 'EUR'],
  ])('sends %s minor %s exactly', async (amountMinor, currency) => {
    const created = await paypal.createPayment(request({ amountMinor, currency }))
    const payment = await paypal.retrievePayment(created.reference)
    expect([payment.amountMinor, payment.currency]).toEqual([amountMinor, currency])
  })

  it('refuses amounts PayPal cannot take before calling it', async () => {
    const before = fake.requests.length
    await expect(paypal.createPayment(request({ amountMinor: 0n }))).rejects.toThrow(/positive/)
    await expect(paypal.createPayment(request({ amountMinor: 150050n, currency: 'HUF' }))).rejects.toThrow(
      /whole/,
    )
    await expect(paypal.createPayment(request({ idempotencyKey: 'k'.repeat(109) }))).rejects.toThrow(/108/)
    expect(fake.requests.length).toBe(before)
  })
})

describe('confirmPayment', () => {
  it('before approval: the payment is pending, and no capture is attempted', async () => {
    const created = await paypal.createPayment(request())
    const since = fake.requests.length
    const payment = await paypal.confirmPayment(created.reference)
    expect(payment.state).toBe('pending')
    expect(payment.captureId).toBeNull()
    expect(requestsTo('/capture', since)).toHaveLength(0)
  })

  it('after approval: captures, with the amount, the fee and the capture id', async () => {
    const { req, reference } = await approvedOrder({ amountMinor: 2500n })
    const payment = await paypal.confirmPayment(reference)
    expect(payment).toEqual({
      provider: 'paypal',
      reference,
      state: 'succeeded',
      amountMinor: 2500n,
      currency: 'USD',
      orderId: req.orderId,
      feeMinor: fakePayPalFeeMinor(2500n, 'USD'),
      refundedMinor: 0n,
      captureId: expect.stringMatching(/^[A-Z0-9]{17}$/),
    })
    const captureCall = requestsTo(`/v2/checkout/orders/${reference}/capture`)
    expect(captureCall.map((r) => r.paypalRequestId)).toEqual([`capture-${reference}`])
    expect(await paypal.retrievePayment(reference)).toEqual(payment)
  })

  it('confirming again is not an error: the same capture, no second capture call', async () => {
    const { reference } = await approvedOrder()
    const first = await paypal.confirmPayment(reference)
    const second = await paypal.confirmPayment(reference)
    expect(second).toEqual(first)
    expect(requestsTo(`/v2/checkout/orders/${reference}/capture`)).toHaveLength(1)
  })

  it('two confirmations at once capture once (the request id replays the capture)', async () => {
    const { reference } = await approvedOrder()
    const [a, b] = await Promise.all([paypal.confirmPayment(reference), paypal.confirmPayment(reference)])
    expect(a.state).toBe('succeeded')
    expect(b).toEqual(a)
  })

  it('a capture that lost the race (ORDER_ALREADY_CAPTURED) reads the captured order', async () => {
    const { reference } = await approvedOrder()
    let capturedElsewhere = false
    const racing = gateway({
      fetch: async (input, init) => {
        if (String(input).endsWith('/capture') && !capturedElsewhere) {
          capturedElsewhere = true
          fake.controls.captureDirectly(reference)
        }
        return fetch(input, init)
      },
    })
    const payment = await racing.confirmPayment(reference)
    expect(capturedElsewhere).toBe(true)
    expect(payment.state).toBe('succeeded')
    expect(payment.captureId).not.toBeNull()
  })

  it('a capture PayPal finds not approved (ORDER_NOT_APPROVED) is a pending payment, not an error', async () => {
    const created = await paypal.createPayment(request())
    let lied = false
    const confused = gateway({
      // The first read claims APPROVED (as a stale replica might); the capture then fails with 422.
      fetch: async (input, init) => {
        const response = await fetch(input, init)
        if (lied || init?.method !== 'GET') return response
        lied = true
        const order = await response.json()
        return Response.json({ ...order, status: 'APPROVED' }, { status: response.status })
      },
    })
    const payment = await confused.confirmPayment(created.reference)
    expect(lied).toBe(true)
    expect(payment.state).toBe('pending')
    expect(requestsTo(`/v2/checkout/orders/${created.reference}/capture`)).toHaveLength(1)
  })

  it('a declined capture is failed; a voided order is canceled', async () => {
    const { reference: declined } = await approvedOrder()
    fake.controls.decline(declined)
    const failed = await paypal.confirmPayment(declined)
    expect(failed.state).toBe('failed')
    expect(failed.captureId).not.toBeNull()
    expect(failed.feeMinor).toBeNull()

    const voided = await paypal.createPayment(request())
    fake.controls.voidOrder(voided.reference)
    expect((await paypal.retrievePayment(voided.reference)).state).toBe('canceled')
  })

  it('reports the money as PayPal captured it, even when it differs from the order', async () => {
    const created = await paypal.createPayment(request({ amountMinor: 999n, currency: 'USD' }))
    fake.controls.captureDirectly(created.reference, { amountMinor: 500n, currency: 'EUR' })
    const payment = await paypal.retrievePayment(created.reference)
    expect(payment).toMatchObject({ state: 'succeeded', amountMinor: 500n, currency: 'EUR' })
    expect(payment.feeMinor).toBe(fakePayPalFeeMinor(500n, 'EUR'))
  })
})

describe('refunds on the order', () => {
  it('partial and full refunds add up in refundedMinor; the payment stays succeeded', async () => {
    const { reference, captureId } = await capturedOrder({ amountMinor: 1000n })
    fake.controls.refund(captureId, 300n)
    expect(await paypal.retrievePayment(reference)).toMatchObject({ state: 'succeeded', refundedMinor: 300n })
    fake.controls.refund(captureId, 700n)
    expect(await paypal.retrievePayment(reference)).toMatchObject({
      state: 'succeeded',
      refundedMinor: 1000n,
    })
    expect(() => fake.controls.refund(captureId, 1n)).toThrow(/nothing to refund/)
  })
})

describe('errors', () => {
  it('5xx: ProviderUnavailableError (retry later)', async () => {
    const created = await paypal.createPayment(request())
    fake.controls.setOutage('5xx')
    try {
      await expect(paypal.retrievePayment(created.reference)).rejects.toBeInstanceOf(ProviderUnavailableError)
      await expect(paypal.confirmPayment(created.reference)).rejects.toThrow(
        /503 SERVICE_UNAVAILABLE.*debug_id/,
      )
      await expect(paypal.createPayment(request())).rejects.toBeInstanceOf(ProviderUnavailableError)
    } finally {
      fake.controls.setOutage(null)
    }
    expect((await paypal.retrievePayment(created.reference)).state).toBe('pending')
  })

  it('no answer: ProviderUnavailableError after timeoutMs', async () => {
    const created = await paypal.createPayment(request())
    const impatient = gateway({ timeoutMs: 300 })
    fake.controls.setOutage('timeout')
    const startedMs = Date.now()
    try {
      await expect(impatient.retrievePayment(created.reference)).rejects.toThrow(/no answer in 300 ms/)
    } finally {
      fake.controls.setOutage(null)
    }
    expect(Date.now() - startedMs).toBeLessThan(2_000)
  })

  it('nobody listening: ProviderUnavailableError', async () => {
    const closed = createServer()
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve))
    const port = (closed.address() as AddressInfo).port
    await new Promise<void>((resolve) => closed.close(() => resolve()))
    const nowhere = new PayPalGateway({ ...credentials, apiBase: `http://127.0.0.1:${port}` })
    await expect(nowhere.retrievePayment('X')).rejects.toBeInstanceOf(ProviderUnavailableError)
  })

  it("4xx: PayPalApiError with PayPal's name, message and debug_id", async () => {
    const error = await paypal.retrievePayment('NOSUCHORDER000000').catch((e: unknown) => e)
    expect(error).toBeInstanceOf(PayPalApiError)
    expect(error).toMatchObject({
      status: 404,
      paypalName: 'RESOURCE_NOT_FOUND',
      issue: 'INVALID_RESOURCE_ID',
    })
    expect((error as PayPalApiError).debugId).toMatch(/^[0-9a-f]{13}$/)
    expect((error as Error).message).toMatch(/404 RESOURCE_NOT_FOUND: The specified resource does not exist/)
  })

  it('bad credentials: PayPalApiError invalid_client, without the secret', async () => {
    const wrong = gateway({ clientSecret: 'wrong-secret-value' })
    const error = await wrong.retrievePayment('X').catch((e: unknown) => e)
    expect(error).toMatchObject({ name: 'PayPalApiError', status: 401, paypalName: 'invalid_client' })
    expect((error as Error).message).not.toMatch(/wrong-secret-value|d3Jvbmct/)
  })
})

describe('OAuth token', () => {
  it('one token request serves many calls, concurrent ones included', async () => {
    const fresh = gateway()
    const since = fake.requests.length
    const created = await fresh.createPayment(request())
    await Promise.all([
      fresh.retrievePayment(created.reference),
      fresh.retrievePayment(created.reference),
      fresh.confirmPayment(created.reference),
    ])
    await fresh.retrievePayment(created.reference)
    expect(requestsTo('/v1/oauth2/token', since)).toHaveLength(1)
  })

  it('concurrent first calls share one token request', async () => {
    const fresh = gateway()
    const since = fake.requests.length
    await Promise.all(Array.from({ length: 5 }, () => fresh.createPayment(request())))
    expect(requestsTo('/v1/oauth2/token', since)).toHaveLength(1)
  })

  it('a revoked token is replaced once and the call goes through', async () => {
    const fresh = gateway()
    const created = await fresh.createPayment(request())
    const since = fake.requests.length
    fake.controls.revokeTokens()
    expect((await fresh.retrievePayment(created.reference)).state).toBe('pending')
    expect(requestsTo('/v1/oauth2/token', since)).toHaveLength(1)
    await paypal.retrievePayment(created.reference) // the shared gateway recovers too
  })

  it('a token is renewed shortly before it expires', async () => {
    const shortLived = await startFakePayPal({ ...credentials, tokenTtlSeconds: 2 })
    try {
      const client = gateway({}, shortLived)
      const created = await client.createPayment(request())
      await client.retrievePayment(created.reference)
      expect(shortLived.requests.filter((r) => r.path === '/v1/oauth2/token')).toHaveLength(1)
      await new Promise((resolve) => setTimeout(resolve, 1_100)) // past half of its two seconds
      await client.retrievePayment(created.reference)
      expect(shortLived.requests.filter((r) => r.path === '/v1/oauth2/token')).toHaveLength(2)
    } finally {
      await shortLived.stop()
    }
  })
})

describe('webhook verification', () => {
  async function someEvent(): Promise<PayPalWebhookEvent> {
    const created = await paypal.createPayment(request())
    const [approved] = fake.controls.approve(created.reference)
    return approved as PayPalWebhookEvent
  }

  it('a delivery signed by PayPal verifies and maps', async () => {
    const event = await someEvent()
    const [result] = await fake.controls.deliver(event, receiver.url)
    expect(result?.status).toBe(200)
    expect(JSON.parse(result?.body ?? '')).toMatchObject({
      eventId: event.id,
      type: 'CHECKOUT.ORDER.APPROVED',
    })
  })

  it('the verification request carries the delivered body and our webhook id', async () => {
    const event = await someEvent()
    const since = fake.requests.length
    const { rawBody, headers } = fake.controls.signedDelivery(event)
    const mapped = await paypal.verifyWebhook(rawBody, headers)
    expect(mapped.payload).toEqual(event)
    expect(requestsTo('/v1/notifications/verify-webhook-signature', since)).toHaveLength(1)
  })

  it('a forged signature is refused', async () => {
    const [result] = await fake.controls.deliver(await someEvent(), receiver.url, { signature: 'forged' })
    expect(result).toEqual({ status: 400, body: expect.stringMatching(/FAILURE/) })
  })

  it('a body changed after signing is refused', async () => {
    const event = await someEvent()
    const [result] = await fake.controls.deliver(event, receiver.url, {
      mutateBody: (raw) => raw.replace('"value":"9.99"', '"value":"999.99"'),
    })
    expect(result?.status).toBe(400)
  })

  it('a stale delivery is refused without asking PayPal', async () => {
    const event = await someEvent()
    const since = fake.requests.length
    const transmissionTime = new Date(Date.now() - 20 * 60_000)
    const [result] = await fake.controls.deliver(event, receiver.url, { transmissionTime })
    expect(result).toEqual({ status: 400, body: expect.stringMatching(/stale/) })
    expect(requestsTo('/v1/notifications', since)).toHaveLength(0)
  })

  it('missing transmission headers, or a body that is not an event, are refused', async () => {
    const { rawBody, headers } = fake.controls.signedDelivery(await someEvent())
    const { 'paypal-transmission-sig': _sig, ...unsigned } = headers
    await expect(paypal.verifyWebhook(rawBody, unsigned)).rejects.toThrow(/paypal-transmission-sig/)
    await expect(paypal.verifyWebhook(Buffer.from('not json'), headers)).rejects.toBeInstanceOf(
      WebhookVerificationError,
    )
    const upperCase = Object.fromEntries(Object.entries(headers).map(([k, v]) => [k.toUpperCase(), v]))
    expect((await paypal.verifyWebhook(rawBody, upperCase)).type).toBe('CHECKOUT.ORDER.APPROVED')
  })

  it('a delivery for another webhook id is refused', async () => {
    const other = gateway({ webhookId: 'WH-SOMEONE-ELSE' })
    const { rawBody, headers } = fake.controls.signedDelivery(await someEvent())
    await expect(other.verifyWebhook(rawBody, headers)).rejects.toBeInstanceOf(WebhookVerificationError)
  })

  it('the same event delivered several times at once verifies each time, with one event id', async () => {
    const event = await someEvent()
    const results = await fake.controls.deliver(event, receiver.url, { times: 3, concurrently: true })
    expect(results.map((r) => r.status)).toEqual([200, 200, 200])
    expect(new Set(results.map((r) => JSON.parse(r.body).eventId))).toEqual(new Set([event.id]))
  })

  it('PayPal down while verifying: ProviderUnavailableError (answer 5xx so PayPal retries)', async () => {
    const event = await someEvent()
    fake.controls.setOutage('5xx')
    try {
      const [result] = await fake.controls.deliver(event, receiver.url)
      expect(result?.status).toBe(503)
    } finally {
      fake.controls.setOutage(null)
    }
  })
})

describe('webhook event mapping', () => {
  async function verified(event: PayPalWebhookEvent | undefined): Promise<ProviderEvent> {
    if (event === undefined) throw new Error('no event')
    const { rawBody, headers } = fake.controls.signedDelivery(event)
    return paypal.verifyWebhook(rawBody, headers)
  }

  it('CHECKOUT.ORDER.APPROVED: the order', async () => {
    const req = request()
    const created = await paypal.createPayment(req)
    const mapped = await verified(fake.controls.approve(created.reference)[0])
    expect(mapped).toMatchObject({
      provider: 'paypal',
      type: 'CHECKOUT.ORDER.APPROVED',
      paymentReference: created.reference,
      orderId: req.orderId,
      captureId: null,
      refundedMinor: null,
      dispute: null,
    })
  })

  it('PAYMENT.CAPTURE.COMPLETED (after our capture, and money arriving directly): capture, order, our id', async () => {
    fake.controls.drainEvents()
    const { req, reference, captureId } = await capturedOrder()
    const [fromCapture] = fake.controls.drainEvents()
    expect(await verified(fromCapture)).toMatchObject({
      type: 'PAYMENT.CAPTURE.COMPLETED',
      paymentReference: reference,
      captureId,
      orderId: req.orderId,
    })

    const direct = request()
    const created = await paypal.createPayment(direct)
    const mapped = await verified(fake.controls.captureDirectly(created.reference, { amountMinor: 1n })[0])
    expect(mapped).toMatchObject({ paymentReference: created.reference, orderId: direct.orderId })
    expect(mapped.captureId).toMatch(/^[A-Z0-9]{17}$/)
  })

  it('PAYMENT.CAPTURE.DENIED: capture, order, our id', async () => {
    const { req, reference } = await approvedOrder()
    const mapped = await verified(fake.controls.decline(reference)[0])
    expect(mapped).toMatchObject({
      type: 'PAYMENT.CAPTURE.DENIED',
      paymentReference: reference,
      orderId: req.orderId,
    })
    expect(mapped.captureId).not.toBeNull()
  })

  it('PAYMENT.CAPTURE.REFUNDED: the capture and the total refunded so far', async () => {
    const { captureId } = await capturedOrder({ amountMinor: 1000n })
    const first = await verified(fake.controls.refund(captureId, 250n)[0])
    expect(first).toMatchObject({ type: 'PAYMENT.CAPTURE.REFUNDED', captureId, refundedMinor: 250n })
    const second = await verified(fake.controls.refund(captureId, 100n)[0])
    expect(second.refundedMinor).toBe(350n)
  })

  it('CUSTOMER.DISPUTE.*: open, open, then won', async () => {
    const { req, captureId } = await capturedOrder({ amountMinor: 1000n })
    const created = await verified(fake.controls.openDispute(captureId, 1000n)[0])
    const disputeId = created.dispute?.id as string
    expect(created).toMatchObject({
      type: 'CUSTOMER.DISPUTE.CREATED',
      captureId,
      orderId: req.orderId,
      dispute: { id: expect.stringMatching(/^PP-D-/), amountMinor: 1000n, currency: 'USD', status: 'open' },
    })
    const updated = await verified(fake.controls.escalateDispute(disputeId)[0])
    expect(updated).toMatchObject({
      type: 'CUSTOMER.DISPUTE.UPDATED',
      dispute: { id: disputeId, status: 'open' },
    })
    const resolved = fake.controls.resolveDispute(disputeId, 'won')
    expect(resolved).toHaveLength(1)
    expect(await verified(resolved[0])).toMatchObject({ dispute: { id: disputeId, status: 'won' } })
  })

  it('a lost dispute: RESOLVED lost, and PAYMENT.CAPTURE.REVERSED with the amount taken back', async () => {
    const { reference, captureId } = await capturedOrder({ amountMinor: 1000n })
    const [opened] = fake.controls.openDispute(captureId, 400n)
    const disputeId = (await verified(opened)).dispute?.id as string
    const [resolved, reversed] = fake.controls.resolveDispute(disputeId, 'lost')
    expect(await verified(resolved)).toMatchObject({ dispute: { status: 'lost', amountMinor: 400n } })
    expect(await verified(reversed)).toMatchObject({
      type: 'PAYMENT.CAPTURE.REVERSED',
      captureId,
      refundedMinor: 400n,
    })
    expect((await paypal.retrievePayment(reference)).refundedMinor).toBe(400n)
  })

  it('an event type it does not know maps with nulls, payload kept', async () => {
    const [template] = fake.controls.approve((await paypal.createPayment(request())).reference)
    const unknown = { ...(template as PayPalWebhookEvent), event_type: 'BILLING.SUBSCRIPTION.CREATED' }
    const mapped = await verified(unknown)
    expect(mapped).toEqual({
      provider: 'paypal',
      eventId: unknown.id,
      type: 'BILLING.SUBSCRIPTION.CREATED',
      paymentReference: null,
      captureId: null,
      orderId: null,
      refundedMinor: null,
      dispute: null,
      payload: unknown,
    })
  })
})

// --- a webhook endpoint, as the HTTP layer will mount one: raw body in, status out ---

interface Receiver {
  url: string
  stop(): Promise<void>
}

async function startReceiver(gateway: PayPalGateway): Promise<Receiver> {
  const server = createServer(async (req, res) => {
    const rawBody = await readAll(req)
    const headers = Object.fromEntries(
      Object.entries(req.headers).map(([k, v]) => [k, Array.isArray(v) ? v.join(',') : v]),
    )
    try {
      const event = await gateway.verifyWebhook(rawBody, headers)
      res.writeHead(200, { 'content-type': 'application/json' })
      res.end(JSON.stringify(event, (_key, value) => (typeof value === 'bigint' ? value.toString() : value)))
    } catch (error) {
      res.writeHead(error instanceof WebhookVerificationError ? 400 : 503, { 'content-type': 'text/plain' })
      res.end(String(error))
    }
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/webhooks/paypal`,
    stop: () => new Promise<void>((resolve) => server.close(() => resolve())),
  }
}

async function readAll(req: IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = []
  for await (const chunk of req) chunks.push(chunk as Buffer)
  return Buffer.concat(chunks)
}

/** A token from the fake, for reading its orders directly. */
async function bearer(): Promise<string> {
  const response = await fetch(`${fake.url}/v1/oauth2/token`, {
    method: 'POST',
    headers: {
      authorization: `Basic ${Buffer.from(`${credentials.clientId}:${credentials.clientSecret}`).toString('base64')}`,
      'content-type': 'application/x-www-form-urlencoded',
    },
    body: 'grant_type=client_credentials',
  })
  return ((await response.json()) as { access_token: string }).access_token
}
