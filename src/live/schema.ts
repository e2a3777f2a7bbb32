import { GraphQLError } from 'graphql'
import { GiftEvent } from '../gifts/schema.js'
import type { GiftEvent as GiftEventRow } from '../gifts/service.js'
import { builder } from '../graphql/builder.js'
import { DomainError } from '../graphql/errors.js'
import { viewerOf } from '../wallet/schema.js'
import type { WalletUpdate as WalletUpdateShape } from './wallet-feed.js'

// Subscriptions, over WebSocket (graphql-ws) and SSE alike. See docs/LIVE.md.

const WalletUpdate = builder.objectRef<WalletUpdateShape>('WalletUpdate').implement({
  description: 'Your wallet balance right after a change.',
  fields: (t) => ({
    coins: t.field({ type: 'Amount', resolve: (u) => u.coins }),
    updatedAt: t.field({ type: 'DateTime', resolve: (u) => u.updatedAt }),
  }),
})

builder.subscriptionType({})

builder.subscriptionFields((t) => ({
  liveGifts: t.field({
    type: GiftEvent,
    description:
      'Every gift event of a live stream, in sequence order, each exactly once. With afterSequence, the stored events after it come first, then live ones, with no gap and no duplicate; without it, the feed starts now. Completes when the stream ends. A subscriber more than 256 events behind is disconnected (WebSocket close 4421); it resumes with afterSequence.',
    args: {
      streamId: t.arg.id({ required: true }),
      afterSequence: t.arg.int({ required: false }),
    },
    authScopes: { public: true },
    subscribe: (_root, args, ctx) =>
      asGraphQLError(() =>
        ctx.services.live.gifts.subscribe(String(args.streamId), args.afterSequence, {
          onOverflow: ctx.disconnectSlowConsumer,
        }),
      ),
    resolve: (event: GiftEventRow) => event,
  }),
  walletUpdated: t.field({
    type: WalletUpdate,
    description: 'Your wallet balance after each change: gift sent, recharge, refund, grant. Yours only.',
    authScopes: { signedIn: true },
    subscribe: (_root, _args, ctx) => ctx.services.live.wallets.subscribe(viewerOf(ctx).userId),
    resolve: (update: WalletUpdateShape) => update,
  }),
}))

/** A refusal (no such stream, a bad afterSequence) as a GraphQL error with its code. */
async function asGraphQLError<T>(start: () => Promise<T>): Promise<T> {
  try {
    return await start()
  } catch (error) {
    if (error instanceof DomainError)
      throw new GraphQLError(error.message, { extensions: { code: error.code } })
    throw error
  }
}
