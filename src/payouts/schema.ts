import { type DefaultConnectionArguments, resolveCursorConnection } from '@pothos/plugin-relay'
import { GraphQLError } from 'graphql'
import { isUuid } from '../db/uuid.js'
import { builder } from '../graphql/builder.js'
import { type UserError, UserErrorRef, withUserErrors } from '../graphql/errors.js'
import { Money } from '../graphql/money.js'
import { User } from '../users/schema.js'
import { Earnings, viewerOf } from '../wallet/schema.js'
import { PAYOUT_PAGE_MAX, type Payout, type PayoutPage } from './service.js'

// Creators cash out from their earnings (`me.earnings`); admins review the
// requests. Who may do what: requestPayout is for signed-in users and refuses
// non-creators with NOT_A_CREATOR; the review queue and decisions are admins'.

export const PayoutStatusEnum = builder.enumType('PayoutStatus', {
  values: {
    PENDING: { value: 'pending', description: 'Waiting for review; the coins are held.' },
    APPROVED: { value: 'approved', description: 'Paid out of the earnings; the money is payable.' },
    REJECTED: { value: 'rejected', description: 'Turned down; the coins are back in the earnings.' },
    EXPIRED: {
      value: 'expired',
      description: 'Not reviewed in time; the coins are back in the earnings.',
    },
  } as const,
})

export const PayoutRef = builder.objectRef<Payout>('Payout').implement({
  description: 'A creator’s request to turn earned coins into money.',
  fields: (t) => ({
    id: t.exposeID('id'),
    status: t.field({ type: PayoutStatusEnum, resolve: (p) => p.status }),
    coins: t.field({ type: 'Amount', description: 'The coins cashed out.', resolve: (p) => p.coins }),
    amount: t.field({
      type: Money,
      description: 'The money they convert to, at the rate in force when requested (rounded down).',
      resolve: (p) => ({ amountMinor: p.amountMinor, currency: p.currency }),
    }),
    creator: t.field({ type: User, resolve: (p) => p.creator }),
    requestedAt: t.field({ type: 'DateTime', resolve: (p) => p.requestedAt }),
    expiresAt: t.field({
      type: 'DateTime',
      description: 'A request still pending then expires, and its coins return to the earnings.',
      resolve: (p) => p.expiresAt,
    }),
    decidedAt: t.field({ type: 'DateTime', nullable: true, resolve: (p) => p.decidedAt }),
    decisionNote: t.string({
      nullable: true,
      description: 'Why it was rejected, or the reviewer’s note on an approval.',
      resolve: (p) => p.decisionReason,
    }),
    decidedBy: t.field({
      type: User,
      nullable: true,
      description: 'The admin who decided; shown to admins only (null for everyone else).',
      resolve: async (p, _args, ctx) => {
        if (p.decidedBy === null || !ctx.viewer?.roles.includes('admin')) return null
        return (await ctx.db.query.users.findFirst({ where: { id: p.decidedBy } })) ?? null
      },
    }),
    ledgerTransactionId: t.id({
      nullable: true,
      description: 'The journal transaction that paid it (approved payouts).',
      resolve: (p) => p.transactionId?.toString() ?? null,
    }),
  }),
})

const PayoutRateRef = builder.objectRef<{ numerator: bigint; denominator: bigint }>('PayoutRate').implement({
  description: '`minorUnits` of the payout currency for every `coins` coins (amounts are rounded down).',
  fields: (t) => ({
    minorUnits: t.field({ type: 'Amount', resolve: (r) => r.numerator }),
    coins: t.field({ type: 'Amount', resolve: (r) => r.denominator }),
  }),
})

const PayoutTermsRef = builder.objectRef<{ userId: string }>('PayoutTerms').implement({
  description: 'What a creator may cash out, and at what rate.',
  fields: (t) => ({
    currency: t.string({ resolve: (_p, _args, ctx) => ctx.services.payouts.config.currency }),
    rate: t.field({ type: PayoutRateRef, resolve: (_p, _args, ctx) => ctx.services.payouts.config.rate }),
    minimumCoins: t.field({
      type: 'Amount',
      resolve: (_p, _args, ctx) => ctx.services.payouts.config.minCoins,
    }),
    dailyCapCoins: t.field({
      type: 'Amount',
      description: 'The most coins requested in any 24 hours (pending and approved requests count).',
      resolve: (_p, _args, ctx) => ctx.services.payouts.config.dailyCapCoins,
    }),
    requestableCoins: t.field({
      type: 'Amount',
      description: 'What the daily cap leaves for a request now (your available earnings limit it too).',
      resolve: (p, _args, ctx) => ctx.services.payouts.requestableCoins(p.userId),
    }),
  }),
})

// ---- keyset cursors: (requested_at, id) ----------------------------------------------

const toCursor = (p: Payout) => Buffer.from(JSON.stringify([p.requestedAt, p.id])).toString('base64url')

/** A timestamptz as the database writes it: 2026-11-26 01:01:25.123456+00. */
const TIMESTAMP = /^\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}(\.\d{1,6})?([+-]\d{2}(:?\d{2})?|Z)$/

function parseCursor(cursor: string | undefined): PayoutPage['after'] {
  if (cursor === undefined) return null
  try {
    const value: unknown = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8'))
    if (
      Array.isArray(value) &&
      value.length === 2 &&
      typeof value[0] === 'string' &&
      TIMESTAMP.test(value[0]) &&
      typeof value[1] === 'string' &&
      isUuid(value[1])
    ) {
      return { requestedAt: value[0], id: value[1] }
    }
  } catch {
    // Falls through to the refusal.
  }
  throw new GraphQLError('bad cursor', { extensions: { code: 'BAD_USER_INPUT' } })
}

/** A forward-only connection page (first/after) over a keyset list. */
function pageOf(args: DefaultConnectionArguments, list: (page: PayoutPage) => Promise<Payout[]>) {
  return resolveCursorConnection<Promise<Payout[]>>(
    { args, defaultSize: 20, maxSize: PAYOUT_PAGE_MAX, toCursor },
    ({ after, before, limit, inverted }) => {
      if (inverted || before) {
        throw new GraphQLError('payouts page forward only (first/after)', {
          extensions: { code: 'BAD_USER_INPUT' },
        })
      }
      return list({ after: parseCursor(after), limit })
    },
  )
}

builder.objectFields(Earnings, (t) => ({
  payouts: t.connection({
    type: PayoutRef,
    description: 'Your payout requests, newest first.',
    resolve: (e, args, ctx) => pageOf(args, (page) => ctx.services.payouts.listOwn(e.userId, page)),
  }),
  payoutTerms: t.field({ type: PayoutTermsRef, resolve: (e) => ({ userId: e.userId }) }),
}))

builder.queryFields((t) => ({
  payoutRequests: t.connection({
    type: PayoutRef,
    description: 'Payout requests in the order they were made (oldest first: the review queue). Admins only.',
    authScopes: { admin: true },
    args: { status: t.arg({ type: PayoutStatusEnum, required: false }) },
    resolve: (_root, args, ctx) =>
      pageOf(args, (page) => ctx.services.payouts.list({ status: args.status ?? null }, page)),
  }),
}))

// ---- mutations ---------------------------------------------------------------------------

interface PayoutPayloadShape {
  payout?: Payout | null
  userErrors: UserError[]
}
function payloadType(name: string) {
  return builder.objectRef<PayoutPayloadShape>(name).implement({
    fields: (t) => ({
      payout: t.field({ type: PayoutRef, nullable: true, resolve: (p) => p.payout ?? null }),
      userErrors: t.field({ type: [UserErrorRef], resolve: (p) => p.userErrors }),
    }),
  })
}
const RequestPayoutInput = builder.inputType('RequestPayoutInput', {
  fields: (t) => ({
    coins: t.field({ type: 'Amount', required: true, description: 'Earned coins to cash out.' }),
    idempotencyKey: t.string({ required: true }),
  }),
})
const ApprovePayoutInput = builder.inputType('ApprovePayoutInput', {
  fields: (t) => ({
    payoutId: t.id({ required: true }),
    note: t.string({ required: false, description: 'Kept with the decision, in the ledger too.' }),
  }),
})
const RejectPayoutInput = builder.inputType('RejectPayoutInput', {
  fields: (t) => ({
    payoutId: t.id({ required: true }),
    reason: t.string({ required: true, description: 'Shown to the creator; kept in the ledger.' }),
  }),
})

builder.mutationFields((t) => ({
  requestPayout: t.field({
    type: payloadType('RequestPayoutPayload'),
    description:
      'Cash out earned coins: they are held while an admin reviews the request. Creators only; idempotent on your key.',
    authScopes: { signedIn: true },
    args: { input: t.arg({ type: RequestPayoutInput, required: true }) },
    resolve: (_root, { input }, ctx) =>
      withUserErrors(async () => ({
        payout: await ctx.services.payouts.request(viewerOf(ctx), {
          coins: input.coins,
          idempotencyKey: input.idempotencyKey,
        }),
      })),
  }),
  approvePayout: t.field({
    type: payloadType('ApprovePayoutPayload'),
    description:
      'Pay a pending request: its coins leave the earnings and its money becomes payable, once. Admins only, never their own.',
    authScopes: { admin: true },
    args: { input: t.arg({ type: ApprovePayoutInput, required: true }) },
    resolve: (_root, { input }, ctx) =>
      withUserErrors(async () => ({
        payout: await ctx.services.payouts.approve(viewerOf(ctx).userId, {
          payoutId: String(input.payoutId),
          note: input.note ?? null,
        }),
      })),
  }),
  rejectPayout: t.field({
    type: payloadType('RejectPayoutPayload'),
    description:
      'Turn a pending request down: its coins return to the earnings. Admins only, never their own.',
    authScopes: { admin: true },
    args: { input: t.arg({ type: RejectPayoutInput, required: true }) },
    resolve: (_root, { input }, ctx) =>
      withUserErrors(async () => ({
        payout: await ctx.services.payouts.reject(viewerOf(ctx).userId, {
          payoutId: String(input.payoutId),
          reason: input.reason,
        }),
      })),
  }),
}))
