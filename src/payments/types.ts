// The payment providers behind one interface. The recharge capability talks
// to a PaymentGateway; each provider's module (stripe.ts, paypal.ts) turns
// the provider's own objects and events into these shapes.

export type ProviderName = 'stripe' | 'paypal'

/** What a payment is at the provider, re-read whenever we settle. */
export type PaymentState =
  | 'pending' // created, waiting for the buyer (Stripe requires_*; PayPal CREATED/APPROVED not captured)
  | 'succeeded' // money captured
  | 'failed' // the attempt failed for good (Stripe payment_failed with no retry, PayPal VOIDED/DECLINED)
  | 'canceled' // canceled or expired at the provider

export interface ProviderPayment {
  provider: ProviderName
  /** Stripe PaymentIntent id, PayPal order id. */
  reference: string
  state: PaymentState
  /** What the provider says was (or is to be) paid, in minor units. */
  amountMinor: bigint
  /** ISO 4217, upper case. */
  currency: string
  /** Our recharge order id, as we put it into the provider's object (Stripe metadata, PayPal custom_id). */
  orderId: string | null
  /** The provider's fee for the captured payment, when it reports one (minor units, same currency). */
  feeMinor: bigint | null
  /** Total refunded so far (minor units). */
  refundedMinor: bigint
  /** The capture/charge id refunds and disputes refer to (Stripe charge id, PayPal capture id). */
  captureId: string | null
}

export interface CreatedPayment {
  reference: string
  /** Stripe: the PaymentIntent's client secret for the Payment Element. */
  clientSecret: string | null
  /** PayPal: the buyer's approval link. */
  approvalUrl: string | null
}

export interface CreatePaymentRequest {
  orderId: string
  amountMinor: bigint
  currency: string
  description: string
  /** Derived from the order: the provider replays the same object for the same key. */
  idempotencyKey: string
}

/** A verified webhook event, reduced to what recharge needs. */
export interface ProviderEvent {
  provider: ProviderName
  /** The provider's event id: the inbox's de-duplication key. */
  eventId: string
  type: string
  /** The payment (PaymentIntent / order) this event is about, when known. */
  paymentReference: string | null
  /** The capture/charge id it refers to (refunds, disputes), when known. */
  captureId: string | null
  /** Our order id, when the event carries it. */
  orderId: string | null
  /** For refunds: the total refunded so far on the capture (minor units), when the event says. */
  refundedMinor: bigint | null
  /** For disputes: the dispute id, its amount and its status. */
  dispute: { id: string; amountMinor: bigint; currency: string; status: DisputeStatus } | null
  /** The raw event object, stored in the inbox. */
  payload: unknown
}

export type DisputeStatus = 'open' | 'won' | 'lost'

export class WebhookVerificationError extends Error {
  override readonly name = 'WebhookVerificationError'
}

/** A provider that answered with an error or did not answer (timeouts, 5xx): the caller may retry later. */
export class ProviderUnavailableError extends Error {
  override readonly name = 'ProviderUnavailableError'
}

export interface PaymentGateway {
  readonly provider: ProviderName
  createPayment(request: CreatePaymentRequest): Promise<CreatedPayment>
  /** Reads the payment as the provider has it now. */
  retrievePayment(reference: string): Promise<ProviderPayment>
  /**
   * The client's return path: for PayPal, captures an approved order (an
   * already-captured order is not an error); for Stripe, the same as retrieve.
   */
  confirmPayment(reference: string): Promise<ProviderPayment>
  /** Verifies a webhook delivery from its raw body and headers; throws WebhookVerificationError. */
  verifyWebhook(rawBody: Buffer, headers: Record<string, string | undefined>): Promise<ProviderEvent>
}
