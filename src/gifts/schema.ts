import { Gift } from '../catalog/schema.js'
import { builder } from '../graphql/builder.js'
import { type UserError, UserErrorRef, withUserErrors } from '../graphql/errors.js'
import { LiveStream } from '../streams/schema.js'
import { User } from '../users/schema.js'
import { viewerOf, Wallet, type WalletShape } from '../wallet/schema.js'
import { giftEventLoaders } from './loaders.js'
import type { GiftEventView } from './types.js'

export const GiftEvent = builder.drizzleObject('giftEvents', {
  name: 'GiftEvent',
  description: 'A gift sent: who sent what to whom, and where it stands in its stream and streak.',
  fields: (t) => ({
    // Gift events come from code (their batch, the live feed), not from planned
    // queries: plain resolvers, as exposed columns would make the drizzle
    // plugin read each event again.
    id: t.id({ resolve: (e) => e.id }),
    sequence: t.int({
      nullable: true,
      description: 'Position in its live stream (1, 2, 3…); null for a gift outside a live stream.',
      resolve: (e) => (e.sequence === null ? null : Number(e.sequence)),
    }),
    quantity: t.int({ resolve: (e) => e.quantity }),
    coins: t.field({ type: 'Amount', description: 'Coins this gift cost in all.', resolve: (e) => e.coins }),
    combo: t.int({
      description:
        'Gifts in this streak so far, this one included: the same sender sending the same gift in the same stream within the combo window continues it.',
      resolve: (e) => e.combo,
    }),
    sentAt: t.field({ type: 'DateTime', resolve: (e) => e.sentAt }),
    // From the rows the gift's batch attached (sendGift's answer), else loaded
    // per request (a retry's answer, the live feed). Not drizzle relations:
    // those would read the event again with its relations, whatever it came with.
    gift: t.field({
      type: Gift,
      resolve: (e: GiftEventView, _args, ctx) => e.gift ?? giftEventLoaders(ctx).gifts.load(e.giftId),
    }),
    sender: t.field({
      type: User,
      resolve: (e: GiftEventView, _args, ctx) => e.sender ?? giftEventLoaders(ctx).users.load(e.senderId),
    }),
    creator: t.field({
      type: User,
      resolve: (e: GiftEventView, _args, ctx) => e.creator ?? giftEventLoaders(ctx).users.load(e.creatorId),
    }),
    liveStream: t.field({
      type: LiveStream,
      nullable: true,
      resolve: (e, _args, ctx) =>
        e.streamId === null ? null : giftEventLoaders(ctx).streams.load(e.streamId),
    }),
  }),
})

interface SendGiftPayloadShape {
  giftEvent?: GiftEventView | null
  wallet?: WalletShape | null
  userErrors: UserError[]
}
const SendGiftPayload = builder.objectRef<SendGiftPayloadShape>('SendGiftPayload').implement({
  fields: (t) => ({
    giftEvent: t.field({ type: GiftEvent, nullable: true, resolve: (p) => p.giftEvent ?? null }),
    wallet: t.field({ type: Wallet, nullable: true, resolve: (p) => p.wallet ?? null }),
    userErrors: t.field({ type: [UserErrorRef], resolve: (p) => p.userErrors }),
  }),
})

const SendGiftInput = builder.inputType('SendGiftInput', {
  fields: (t) => ({
    giftId: t.id({ required: true }),
    liveStreamId: t.id({ required: false, description: 'The live stream the gift is sent in.' }),
    creatorId: t.id({ required: false, description: 'For a gift outside a live stream (on a video).' }),
    quantity: t.int({ required: false, description: 'How many of the gift; 1 when omitted.' }),
    idempotencyKey: t.string({
      required: true,
      description: 'Yours to choose, unique per gift: a retry with the same key sends nothing more.',
    }),
  }),
})

builder.mutationFields((t) => ({
  sendGift: t.field({
    type: SendGiftPayload,
    description:
      'Send a gift to a creator: your wallet is debited, the creator and the platform credited, in one ledger transaction.',
    authScopes: { signedIn: true },
    args: { input: t.arg({ type: SendGiftInput, required: true }) },
    resolve: (_root, { input }, ctx) =>
      withUserErrors(async () => {
        const senderId = viewerOf(ctx).userId
        const sent = await ctx.services.gifts.send({
          senderId,
          giftId: String(input.giftId),
          liveStreamId:
            input.liveStreamId === null || input.liveStreamId === undefined
              ? null
              : String(input.liveStreamId),
          creatorId:
            input.creatorId === null || input.creatorId === undefined ? null : String(input.creatorId),
          quantity: input.quantity ?? null,
          idempotencyKey: input.idempotencyKey,
        })
        return { giftEvent: sent.event, wallet: { userId: senderId, coins: sent.walletCoins } }
      }),
  }),
}))
