import { and, eq, sql } from 'drizzle-orm'
import { users } from '../db/schema.js'
import { isUuid } from '../db/uuid.js'
import { builder } from '../graphql/builder.js'
import { DomainError, type UserError, UserErrorRef, withUserErrors } from '../graphql/errors.js'

/** A person's public profile: what anyone may see. Nothing here is money or private. */
export const User = builder.drizzleObject('users', {
  name: 'User',
  description: 'A user’s public profile.',
  select: { columns: { id: true, handle: true, displayName: true, roles: true } },
  fields: (t) => ({
    // Resolvers rather than exposes: an exposed column makes the drizzle plugin
    // read a row again when it did not come from a planned query (a gift's
    // sender or creator, which its batch already read). The selection above
    // serves planned queries.
    id: t.id({ resolve: (u) => u.id }),
    handle: t.string({ resolve: (u) => u.handle }),
    displayName: t.string({ resolve: (u) => u.displayName }),
    isCreator: t.boolean({ resolve: (u) => u.roles.includes('creator') }),
  }),
})

// ---- admins: a creator's share of their gifts ---------------------------------

const SetCreatorShareInput = builder.inputType('SetCreatorShareInput', {
  fields: (t) => ({
    creatorId: t.id({ required: true }),
    shareBasisPoints: t.int({
      required: true,
      description: 'The creator’s share of the coins gifted to them, in basis points: 5000 is 50%.',
    }),
  }),
})

interface CreatorSharePayloadShape {
  creator?: typeof users.$inferSelect | null
  shareBasisPoints?: number | null
  userErrors: UserError[]
}
const SetCreatorSharePayload = builder
  .objectRef<CreatorSharePayloadShape>('SetCreatorSharePayload')
  .implement({
    fields: (t) => ({
      creator: t.field({ type: User, nullable: true, resolve: (p) => p.creator ?? null }),
      shareBasisPoints: t.int({ nullable: true, resolve: (p) => p.shareBasisPoints ?? null }),
      userErrors: t.field({ type: [UserErrorRef], resolve: (p) => p.userErrors }),
    }),
  })

builder.mutationFields((t) => ({
  setCreatorShare: t.field({
    type: SetCreatorSharePayload,
    description:
      'Set a creator’s share of the gifts they receive (default 50%). Admins only; applies to later gifts.',
    authScopes: { admin: true },
    args: { input: t.arg({ type: SetCreatorShareInput, required: true }) },
    resolve: (_root, { input }, ctx) =>
      withUserErrors(async () => {
        const creatorId = String(input.creatorId)
        const bps = input.shareBasisPoints
        if (!Number.isInteger(bps) || bps < 0 || bps > 10_000) {
          throw new DomainError(
            'INVALID_INPUT',
            'shareBasisPoints must be between 0 and 10000',
            'input.shareBasisPoints',
          )
        }
        if (!isUuid(creatorId))
          throw new DomainError('CREATOR_NOT_FOUND', 'no such creator', 'input.creatorId')
        const [creator] = await ctx.db
          .update(users)
          .set({ creatorShareBps: bps, updatedAt: sql`now()` })
          .where(and(eq(users.id, creatorId), sql`'creator' = any(${users.roles})`))
          .returning()
        if (!creator) throw new DomainError('CREATOR_NOT_FOUND', 'no such creator', 'input.creatorId')
        ctx.services.gifts.forgetCreator(creator.id)
        return { creator, shareBasisPoints: creator.creatorShareBps }
      }),
  }),
}))
