import { resolveCursorConnection } from '@pothos/plugin-relay'
import { GraphQLError } from 'graphql'
import { LedgerTransaction } from '../audit/schema.js'
import { isUuid } from '../db/uuid.js'
import { builder } from '../graphql/builder.js'
import type { Context } from '../graphql/context.js'
import { DomainError, type UserError, UserErrorRef, withUserErrors } from '../graphql/errors.js'
import type { PostedTransaction } from '../ledger/index.js'
import { User } from '../users/schema.js'
import {
  checkKey,
  dailyLimit,
  earningsBalance,
  grantCoins,
  HISTORY_PAGE_MAX,
  setDailyLimit,
  spentToday,
  type WalletEntry,
  walletBalance,
  walletHistory,
} from './service.js'

// Everything here is the signed-in user's own: `me` is the only way in, so a
// user can never name someone else's wallet, history, earnings or limits.

interface MeShape {
  userId: string
  roles: string[]
}
/** A wallet; `coins` is filled when the caller already knows it (after a gift). */
export interface WalletShape {
  userId: string
  coins?: bigint
}

const WalletEntryRef = builder.objectRef<WalletEntry>('WalletEntry').implement({
  description: 'One movement of coins in or out of your wallet.',
  fields: (t) => ({
    id: t.id({ resolve: (e) => e.id.toString() }),
    kind: t.exposeString('kind'),
    amount: t.field({ type: 'Amount', description: 'Positive in, negative out.', resolve: (e) => e.amount }),
    balanceAfter: t.field({ type: 'Amount', resolve: (e) => e.balanceAfter }),
    postedAt: t.field({ type: 'DateTime', resolve: (e) => e.postedAt }),
    description: t.exposeString('description'),
  }),
})

export const Wallet = builder.objectRef<WalletShape>('Wallet').implement({
  description: 'Your coins.',
  fields: (t) => ({
    coins: t.field({
      type: 'Amount',
      resolve: (w, _args, ctx) =>
        w.coins ?? walletBalance(ctx.services.ledger, w.userId).then((b) => b.coins),
    }),
    updatedAt: t.field({
      type: 'DateTime',
      nullable: true,
      description: 'When the balance last changed; null if it never has.',
      resolve: async (w, _args, ctx) => {
        const [last] = await walletHistory(ctx.db, ctx.services.ledger, w.userId, {
          beforeSeq: null,
          limit: 1,
        })
        return last?.postedAt ?? null
      },
    }),
    history: t.connection({
      type: WalletEntryRef,
      description: 'Your wallet’s entries, newest first.',
      resolve: (w, args, ctx) =>
        resolveCursorConnection<Promise<WalletEntry[]>>(
          {
            args,
            defaultSize: 20,
            maxSize: HISTORY_PAGE_MAX,
            toCursor: (e: WalletEntry) => e.seq.toString(),
          },
          async ({ after, limit, inverted, before }): Promise<WalletEntry[]> => {
            if (inverted || before) throw badInput('history pages forward only (first/after)')
            return walletHistory(ctx.db, ctx.services.ledger, w.userId, {
              beforeSeq: parseCursor(after),
              limit,
            })
          },
        ),
    }),
  }),
})

// A query has no userErrors: a bad argument is a GraphQL error (a DomainError here was masked as an internal one).
function badInput(message: string): GraphQLError {
  return new GraphQLError(message, { extensions: { code: 'BAD_USER_INPUT' } })
}

function parseCursor(cursor: string | undefined): bigint | null {
  if (cursor === undefined) return null
  if (!/^\d{1,19}$/.test(cursor) || BigInt(cursor) > 2n ** 63n - 1n)
    throw badInput('bad cursor: pass an endCursor back as it came')
  return BigInt(cursor)
}

export const Earnings = builder.objectRef<{ userId: string }>('Earnings').implement({
  description: 'A creator’s earned coins.',
  fields: (t) => ({
    coins: t.field({
      type: 'Amount',
      description: 'Earned coins not yet paid out (including those held for payouts under review).',
      resolve: async (e, _args, ctx) => (await earningsBalance(ctx.services.ledger, e.userId)).coins,
    }),
    pendingPayoutCoins: t.field({
      type: 'Amount',
      description: 'Coins held for payouts under review.',
      resolve: async (e, _args, ctx) =>
        (await earningsBalance(ctx.services.ledger, e.userId)).pendingPayoutCoins,
    }),
  }),
})

const SpendLimits = builder.objectRef<{ userId: string }>('SpendLimits').implement({
  description: 'What you may spend on gifts.',
  fields: (t) => ({
    perGiftCoins: t.field({
      type: 'Amount',
      description: 'The platform’s maximum for one gift.',
      resolve: (_l, _args, ctx) => ctx.services.config.gifts.coinsMax,
    }),
    dailyCoins: t.field({
      type: 'Amount',
      nullable: true,
      description: 'Your own daily limit (UTC days); null when you set none.',
      resolve: (l, _args, ctx) => dailyLimit(ctx.db, l.userId),
    }),
    spentTodayCoins: t.field({ type: 'Amount', resolve: (l, _args, ctx) => spentToday(ctx.db, l.userId) }),
  }),
})

const Me = builder.objectRef<MeShape>('Me').implement({
  description: 'You: your profile, your wallet and, for creators, your earnings.',
  fields: (t) => ({
    user: t.field({
      type: User,
      resolve: async (me, _args, ctx) => {
        const user = await ctx.db.query.users.findFirst({ where: { id: me.userId } })
        if (!user) throw new Error('signed-in user has no row')
        return user
      },
    }),
    wallet: t.field({ type: Wallet, resolve: (me) => ({ userId: me.userId }) }),
    earnings: t.field({
      type: Earnings,
      nullable: true,
      description: 'Null unless you are a creator.',
      resolve: (me) => (me.roles.includes('creator') ? { userId: me.userId } : null),
    }),
    spendLimits: t.field({ type: SpendLimits, resolve: (me) => ({ userId: me.userId }) }),
  }),
})

builder.queryFields((t) => ({
  me: t.field({
    type: Me,
    authScopes: { signedIn: true },
    resolve: (_root, _args, ctx) => ({ userId: viewerOf(ctx).userId, roles: viewerOf(ctx).roles }),
  }),
}))

// ---- mutations ----------------------------------------------------------------

/**
 * What an admin learns about the recipient's wallet: its balance right after
 * the grant, and nothing else (not the history, not when it last moved).
 */
const GrantedWallet = builder.objectRef<{ coins: bigint }>('GrantedWallet').implement({
  description: 'The recipient’s balance right after a grant.',
  fields: (t) => ({ coins: t.field({ type: 'Amount', resolve: (w) => w.coins }) }),
})

interface GrantPayloadShape {
  wallet?: { coins: bigint } | null
  ledgerTransaction?: PostedTransaction | null
  userErrors: UserError[]
}
const GrantCoinsPayload = builder.objectRef<GrantPayloadShape>('GrantCoinsPayload').implement({
  fields: (t) => ({
    wallet: t.field({ type: GrantedWallet, nullable: true, resolve: (p) => p.wallet ?? null }),
    ledgerTransaction: t.field({
      type: LedgerTransaction,
      nullable: true,
      resolve: (p) => p.ledgerTransaction ?? null,
    }),
    userErrors: t.field({ type: [UserErrorRef], resolve: (p) => p.userErrors }),
  }),
})
const GrantCoinsInput = builder.inputType('GrantCoinsInput', {
  fields: (t) => ({
    userId: t.id({ required: true }),
    coins: t.field({ type: 'Amount', required: true }),
    reason: t.string({ required: true }),
    idempotencyKey: t.string({ required: true }),
  }),
})

interface LimitPayloadShape {
  spendLimits?: { userId: string } | null
  userErrors: UserError[]
}
const SetDailySpendLimitPayload = builder
  .objectRef<LimitPayloadShape>('SetDailySpendLimitPayload')
  .implement({
    fields: (t) => ({
      spendLimits: t.field({ type: SpendLimits, nullable: true, resolve: (p) => p.spendLimits ?? null }),
      userErrors: t.field({ type: [UserErrorRef], resolve: (p) => p.userErrors }),
    }),
  })
const SetDailySpendLimitInput = builder.inputType('SetDailySpendLimitInput', {
  fields: (t) => ({
    dailyCoins: t.field({
      type: 'Amount',
      required: false,
      description: 'Coins per UTC day; null removes your limit.',
    }),
  }),
})

builder.mutationFields((t) => ({
  grantCoins: t.field({
    type: GrantCoinsPayload,
    description:
      'Promotional coins to a user, from the platform’s promotions account. Admins only; idempotent.',
    authScopes: { admin: true },
    args: { input: t.arg({ type: GrantCoinsInput, required: true }) },
    resolve: (_root, { input }, ctx) =>
      withUserErrors(async () => {
        const userId = String(input.userId)
        checkKey(input.idempotencyKey)
        if (!isUuid(userId)) throw new DomainError('USER_NOT_FOUND', 'no such user', 'input.userId')
        const { transaction, walletCoins } = await grantCoins(ctx.db, ctx.services.ledger, {
          userId,
          coins: input.coins,
          reason: input.reason,
          idempotencyKey: input.idempotencyKey,
          grantedBy: viewerOf(ctx).userId,
        })
        return {
          wallet: walletCoins === null ? null : { coins: walletCoins },
          ledgerTransaction: transaction,
        }
      }),
  }),
  setDailySpendLimit: t.field({
    type: SetDailySpendLimitPayload,
    description: 'Set (or remove) your own daily limit on gift spending.',
    authScopes: { signedIn: true },
    args: { input: t.arg({ type: SetDailySpendLimitInput, required: true }) },
    resolve: (_root, { input }, ctx) =>
      withUserErrors(async () => {
        const userId = viewerOf(ctx).userId
        await setDailyLimit(ctx.db, userId, input.dailyCoins ?? null)
        return { spendLimits: { userId } }
      }),
  }),
}))

export function viewerOf(ctx: Context) {
  if (!ctx.viewer) throw new Error('authScopes let an anonymous request through')
  return ctx.viewer
}
