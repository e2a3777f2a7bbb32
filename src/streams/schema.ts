import { z } from 'zod'
import { isUuid } from '../db/uuid.js'
import { builder } from '../graphql/builder.js'
import { DomainError, type UserError, UserErrorRef, withUserErrors } from '../graphql/errors.js'
import { User } from '../users/schema.js'
import { endLiveStream, type LiveStream as LiveStreamRow, startLiveStream } from './service.js'
import { TOP_GIFTERS_MAX, type TopGifter, topGiftersLoader } from './top-gifters.js'

export const LiveStreamStatus = builder.enumType('LiveStreamStatus', {
  values: { LIVE: { value: 'live' }, ENDED: { value: 'ended' } } as const,
})

const TopGifterRef = builder.objectRef<TopGifter>('TopGifter').implement({
  description: 'A place in a live stream’s ranking of gifters, by coins gifted in it.',
  fields: (t) => ({
    rank: t.exposeInt('rank'),
    coins: t.field({ type: 'Amount', resolve: (g) => g.coins }),
    user: t.field({ type: User, resolve: (g) => g.user }),
  }),
})

// One loader per request and page size, so a page of streams costs one query for all their rankings.
const loaders = new WeakMap<object, Map<number, ReturnType<typeof topGiftersLoader>>>()
function loaderFor(ctx: { db: Parameters<typeof topGiftersLoader>[0] }, first: number) {
  let byFirst = loaders.get(ctx)
  if (!byFirst) {
    byFirst = new Map()
    loaders.set(ctx, byFirst)
  }
  let loader = byFirst.get(first)
  if (!loader) {
    loader = topGiftersLoader(ctx.db, first)
    byFirst.set(first, loader)
  }
  return loader
}

export const LiveStream = builder.drizzleObject('liveStreams', {
  name: 'LiveStream',
  description: 'A creator’s live stream. Public: anyone may watch it and its gift totals.',
  fields: (t) => ({
    id: t.exposeID('id'),
    title: t.exposeString('title'),
    status: t.field({ type: LiveStreamStatus, resolve: (s) => s.status }),
    startedAt: t.field({ type: 'DateTime', resolve: (s) => s.startedAt }),
    endedAt: t.field({ type: 'DateTime', nullable: true, resolve: (s) => s.endedAt }),
    giftCoins: t.field({
      type: 'Amount',
      description: 'Coins gifted in this stream so far.',
      resolve: (s) => s.giftCoins,
    }),
    creator: t.relation('creator'),
    topGifters: t.field({
      type: [TopGifterRef],
      args: {
        first: t.arg.int({
          defaultValue: 10,
          validate: z.number().int().min(1).max(TOP_GIFTERS_MAX),
        }),
      },
      resolve: (s, args, ctx) => loaderFor(ctx, args.first ?? 10).load(s.id),
    }),
  }),
})

builder.queryFields((t) => ({
  liveStreams: t.drizzleConnection({
    type: 'liveStreams',
    description: 'The streams live now, newest first.',
    resolve: (query, _root, _args, ctx) =>
      ctx.db.query.liveStreams.findMany(
        query({ where: { status: 'live' }, orderBy: { startedAt: 'desc', id: 'desc' } }),
      ),
  }),
  liveStream: t.drizzleField({
    type: 'liveStreams',
    nullable: true,
    args: { id: t.arg.id({ required: true }) },
    resolve: (query, _root, args, ctx) => {
      const id = String(args.id)
      if (!isUuid(id)) return null
      return ctx.db.query.liveStreams.findFirst(query({ where: { id } }))
    },
  }),
}))

interface StreamPayloadShape {
  liveStream?: LiveStreamRow | null
  userErrors: UserError[]
}
const StreamPayload = (name: string) =>
  builder.objectRef<StreamPayloadShape>(name).implement({
    fields: (t) => ({
      liveStream: t.field({ type: LiveStream, nullable: true, resolve: (p) => p.liveStream ?? null }),
      userErrors: t.field({ type: [UserErrorRef], resolve: (p) => p.userErrors }),
    }),
  })

const StartLiveStreamPayload = StreamPayload('StartLiveStreamPayload')
const EndLiveStreamPayload = StreamPayload('EndLiveStreamPayload')

const StartLiveStreamInput = builder.inputType('StartLiveStreamInput', {
  fields: (t) => ({ title: t.string({ required: true }) }),
})
const EndLiveStreamInput = builder.inputType('EndLiveStreamInput', {
  fields: (t) => ({ liveStreamId: t.id({ required: true }) }),
})

builder.mutationFields((t) => ({
  startLiveStream: t.field({
    type: StartLiveStreamPayload,
    description: 'Go live. A creator has at most one live stream at a time.',
    authScopes: { creator: true },
    args: { input: t.arg({ type: StartLiveStreamInput, required: true }) },
    resolve: (_root, { input }, ctx) =>
      withUserErrors(async () => ({
        liveStream: await startLiveStream(ctx.db, viewerId(ctx), input.title),
      })),
  }),
  endLiveStream: t.field({
    type: EndLiveStreamPayload,
    description: 'End one of your own live streams. Ending an ended stream changes nothing.',
    authScopes: { creator: true },
    args: { input: t.arg({ type: EndLiveStreamInput, required: true }) },
    resolve: (_root, { input }, ctx) =>
      withUserErrors(async () => {
        const id = String(input.liveStreamId)
        if (!isUuid(id)) {
          throw new DomainError('STREAM_NOT_FOUND', 'no such live stream of yours', 'input.liveStreamId')
        }
        const ended = await endLiveStream(ctx.db, viewerId(ctx), id)
        // After the commit: the gift feed's subscribers catch up and complete.
        ctx.services.live.streamEnded(ended.id)
        return { liveStream: ended }
      }),
  }),
}))

function viewerId(ctx: { viewer: { userId: string } | null }): string {
  if (!ctx.viewer) throw new Error('authScopes let an anonymous request through')
  return ctx.viewer.userId
}
