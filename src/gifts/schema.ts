import { builder } from '../graphql/builder.js'
import { type UserError, UserErrorRef, withUserErrors } from '../graphql/errors.js'
import { viewerOf, Wallet, type WalletShape } from '../wallet/schema.js'
import type { GiftEvent as GiftEventRow } from './service.js'

export const GiftEvent = builder.drizzleObject('giftEvents', {
  name: 'GiftEvent',
  description: 'A gift sent: who sent what to whom, and where it stands in its stream and streak.',
  fields: (t) => ({
    id: t.exposeID('id'),
    sequence: t.int({
      nullable: true,
      description: 'Position in its live stream (1, 2, 3…); null for a gift outside a live stream.',
      resolve: (e) => (e.sequence === null ? null : Number(e.sequence)),
    }),
    quantity: t.exposeInt('quantity'),
    coins: t.field({ type: 'Amount', description: 'Coins this gift cost in all.', resolve: (e) => e.coins }),
    combo: t.exposeInt('combo', {
      description:
        'Gifts in this streak so far, this one included: the same sender sending the same gift in the same stream within the combo window continues it.',
    }),
    sentAt: t.field({ type: 'DateTime', resolve: (e) => e.sentAt }),
    gift: t.relation('gift'),
    sender: t.relation('sender'),
    creator: t.relation('creator'),
    liveStream: t.relation('stream', { nullable: true }),
  }),
})

interface SendGiftPayloadShape {
  giftEvent?: GiftEventRow | null
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
