import { GraphQLError } from 'graphql'
import { GiftEvent } from '../gifts/schema.js'
import type { GiftEvent as GiftEventRow } from '../gifts/service.js'
import { builder } from '../graphql/builder.js'
import { DomainError } from '../graphql/errors.js'
import { viewerOf } from '../wallet/schema.js'
import type { StreakEnd as StreakEndShape } from './streaks.js'
import type { WalletUpdate as WalletUpdateShape } from './wallet-feed.js'

// Subscriptions, over WebSocket (graphql-ws) and SSE alike. See docs/LIVE.md.

const WalletUpdate = builder.objectRef<WalletUpdateShape>('WalletUpdate').implement({
  description: 'Your wallet balance right after a change.',
  fields: (t) => ({
    coins: t.field({ type: 'Amount', resolve: (u) => u.coins }),
    updatedAt: t.field({ type: 'DateTime', resolve: (u) => u.updatedAt }),
  }),
})

const StreakEnd = builder.objectRef<StreakEndShape>('StreakEnd').implement({
  description:
    'A streak is over: no more gifts will continue it. Its last gift (lastGiftEventId, lastSequence) carries the final combo.',
  fields: (t) => ({
    streamId: t.exposeID('streamId'),
    senderId: t.exposeID('senderId'),
    giftId: t.exposeID('giftId'),
    combo: t.exposeInt('combo', { description: 'The final count of the streak.' }),
    lastSequence: t.exposeInt('lastSequence'),
    lastGiftEventId: t.exposeID('lastGiftEventId'),
    endedAt: t.field({ type: 'DateTime', resolve: (e) => e.endedAt }),
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
  liveStreakEnds: t.field({
    type: StreakEnd,
    description:
      'The end of each gift streak of a live stream, decided by the server: the combo window passed with no gift continuing it, or the stream ended. Live only (no replay). Completes when the stream ends.',
    args: { streamId: t.arg.id({ required: true }) },
    authScopes: { public: true },
    subscribe: (_root, args, ctx) =>
      asGraphQLError(() =>
        ctx.services.live.streaks.subscribe(String(args.streamId), ctx.disconnectSlowConsumer),
      ),
    resolve: (end: StreakEndShape) => end,
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
