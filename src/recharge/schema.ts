import { builder } from '../graphql/builder.js'
import { DomainError, type UserError, UserErrorRef, withUserErrors } from '../graphql/errors.js'
import { Money } from '../graphql/money.js'
import { viewerOf, Wallet, type WalletShape } from '../wallet/schema.js'
import { type ReconciliationFinding, type ReconciliationReportShape, reconciliationReport } from './report.js'
import type { Checkout, RechargeOrder } from './service.js'

export const PaymentProvider = builder.enumType('PaymentProvider', {
  values: { STRIPE: { value: 'stripe' }, PAYPAL: { value: 'paypal' } } as const,
})

export const RechargeStatus = builder.enumType('RechargeStatus', {
  values: {
    PENDING: { value: 'pending' },
    SUCCEEDED: { value: 'succeeded' },
    FAILED: { value: 'failed' },
    CANCELED: { value: 'canceled' },
    EXPIRED: { value: 'expired' },
    PARTIALLY_REFUNDED: { value: 'partially_refunded' },
    REFUNDED: { value: 'refunded' },
    DISPUTED: { value: 'disputed' },
  } as const,
})

export const Recharge = builder.objectRef<RechargeOrder>('Recharge').implement({
  description: 'A purchase of coins: what was bought, and where its payment stands.',
  fields: (t) => ({
    id: t.exposeID('id'),
    status: t.field({ type: RechargeStatus, resolve: (r) => r.status }),
    provider: t.field({ type: PaymentProvider, resolve: (r) => r.provider }),
    providerReference: t.exposeString('providerReference', {
      nullable: true,
      description: 'The Stripe PaymentIntent id or the PayPal order id.',
    }),
    coins: t.field({ type: 'Amount', description: 'The package’s coins.', resolve: (r) => r.coins }),
    bonusCoins: t.field({ type: 'Amount', description: 'Coins added on top.', resolve: (r) => r.bonusCoins }),
    price: t.field({ type: Money, resolve: (r) => ({ amountMinor: r.priceMinor, currency: r.currency }) }),
    refunded: t.field({
      type: Money,
      description: 'Money returned to the buyer so far (refunds and lost disputes).',
      resolve: (r) => ({ amountMinor: r.refundedMinor, currency: r.currency }),
    }),
    createdAt: t.field({ type: 'DateTime', resolve: (r) => r.createdAt }),
    completedAt: t.field({ type: 'DateTime', nullable: true, resolve: (r) => r.completedAt }),
  }),
})

const CheckoutRef = builder.objectRef<Checkout>('Checkout').implement({
  description: 'What the client needs to take the payment.',
  fields: (t) => ({
    provider: t.field({ type: PaymentProvider, resolve: (c) => c.provider }),
    clientSecret: t.exposeString('clientSecret', {
      nullable: true,
      description:
        'Stripe: the PaymentIntent’s client secret, for the Payment Element (cards, Apple Pay, Google Pay).',
    }),
    approvalUrl: t.exposeString('approvalUrl', {
      nullable: true,
      description: 'PayPal: where the buyer approves.',
    }),
    providerReference: t.exposeString('providerReference', { nullable: true }),
  }),
})

const CreateRechargeInput = builder.inputType('CreateRechargeInput', {
  fields: (t) => ({
    packageId: t.id({ required: true }),
    provider: t.field({ type: PaymentProvider, required: true }),
    currency: t.string({ required: false, description: 'ISO 4217; USD when omitted.' }),
    idempotencyKey: t.string({ required: true }),
  }),
})
const ConfirmRechargeInput = builder.inputType('ConfirmRechargeInput', {
  fields: (t) => ({ rechargeId: t.id({ required: true }) }),
})

interface CreatePayloadShape {
  recharge?: RechargeOrder | null
  checkout?: Checkout | null
  userErrors: UserError[]
}
const CreateRechargePayload = builder.objectRef<CreatePayloadShape>('CreateRechargePayload').implement({
  fields: (t) => ({
    recharge: t.field({ type: Recharge, nullable: true, resolve: (p) => p.recharge ?? null }),
    checkout: t.field({ type: CheckoutRef, nullable: true, resolve: (p) => p.checkout ?? null }),
    userErrors: t.field({ type: [UserErrorRef], resolve: (p) => p.userErrors }),
  }),
})
interface ConfirmPayloadShape {
  recharge?: RechargeOrder | null
  wallet?: WalletShape | null
  userErrors: UserError[]
}
const ConfirmRechargePayload = builder.objectRef<ConfirmPayloadShape>('ConfirmRechargePayload').implement({
  fields: (t) => ({
    recharge: t.field({ type: Recharge, nullable: true, resolve: (p) => p.recharge ?? null }),
    wallet: t.field({ type: Wallet, nullable: true, resolve: (p) => p.wallet ?? null }),
    userErrors: t.field({ type: [UserErrorRef], resolve: (p) => p.userErrors }),
  }),
})

// ---- reconciliation: accountants read what does not add up ----------------------

const RechargeDiscrepancyKind = builder.enumType('RechargeDiscrepancyKind', {
  values: {
    PAYMENT_WITHOUT_CREDIT: { description: 'The provider took the money; no coins were credited.' },
    CREDIT_WITHOUT_PAYMENT: { description: 'Coins were credited; the order says it was not paid.' },
    AMOUNT_MISMATCH: {
      description: 'The provider’s amount or currency differs from the order: never credited.',
    },
  } as const,
})

const RechargeDiscrepancy = builder.objectRef<ReconciliationFinding>('RechargeDiscrepancy').implement({
  description: 'A recharge whose books and payment disagree.',
  fields: (t) => ({
    kind: t.field({ type: RechargeDiscrepancyKind, resolve: (f) => f.kind }),
    message: t.exposeString('message'),
    recharge: t.field({ type: Recharge, resolve: (f) => f.order }),
    creditTransactionId: t.id({
      nullable: true,
      description: 'The ledger transaction that credited its coins, if any (see ledgerTransaction).',
      resolve: (f) => f.order.creditTransactionId?.toString() ?? null,
    }),
  }),
})

const RechargeReconciliation = builder
  .objectRef<ReconciliationReportShape>('RechargeReconciliation')
  .implement({
    description:
      'The reconciliation report: payments without credits, credits without payments, mismatches. Read from the orders as they stand; the settling runs in the background job.',
    fields: (t) => ({
      checkedAt: t.field({ type: 'DateTime', resolve: (r) => r.checkedAt }),
      discrepancies: t.field({
        type: [RechargeDiscrepancy],
        description: 'Oldest order first; at most 1,000.',
        resolve: (r) => r.findings,
      }),
      limitReached: t.exposeBoolean('limitReached', {
        description: 'True when the list stopped at its maximum: there may be more.',
      }),
    }),
  })

builder.queryFields((t) => ({
  rechargeReconciliation: t.field({
    type: RechargeReconciliation,
    description: 'Recharges whose books and payments disagree. Accountants only.',
    authScopes: { accountant: true },
    resolve: (_root, _args, ctx) => reconciliationReport(ctx.db, ctx.services.recharge),
  }),
  recharge: t.field({
    type: Recharge,
    nullable: true,
    description: 'One of your recharges.',
    authScopes: { signedIn: true },
    args: { id: t.arg.id({ required: true }) },
    resolve: async (_root, args, ctx) => {
      try {
        return await ctx.services.recharge.ownOrder(viewerOf(ctx).userId, String(args.id))
      } catch (error) {
        if (error instanceof DomainError && error.code === 'RECHARGE_NOT_FOUND') return null
        throw error
      }
    },
  }),
}))

builder.mutationFields((t) => ({
  createRecharge: t.field({
    type: CreateRechargePayload,
    description: 'Start buying a coin package. Idempotent on your key: a retry returns the same recharge.',
    authScopes: { signedIn: true },
    args: { input: t.arg({ type: CreateRechargeInput, required: true }) },
    resolve: (_root, { input }, ctx) =>
      withUserErrors(async () => {
        const { order, checkout } = await ctx.services.recharge.create({
          userId: viewerOf(ctx).userId,
          packageId: String(input.packageId),
          provider: input.provider,
          currency: input.currency ?? null,
          idempotencyKey: input.idempotencyKey,
        })
        return { recharge: order, checkout }
      }),
  }),
  confirmRecharge: t.field({
    type: ConfirmRechargePayload,
    description: 'Back from the payment page: checks with the provider and credits the coins once paid.',
    authScopes: { signedIn: true },
    args: { input: t.arg({ type: ConfirmRechargeInput, required: true }) },
    resolve: (_root, { input }, ctx) =>
      withUserErrors(async () => {
        const userId = viewerOf(ctx).userId
        const recharge = await ctx.services.recharge.confirm(userId, String(input.rechargeId))
        return { recharge, wallet: { userId } }
      }),
  }),
}))
