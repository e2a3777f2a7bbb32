import SchemaBuilder from '@pothos/core'
import DrizzlePlugin from '@pothos/plugin-drizzle'
import RelayPlugin from '@pothos/plugin-relay'
import ScopeAuthPlugin from '@pothos/plugin-scope-auth'
import ValidationPlugin from '@pothos/plugin-validation'
import { getTableConfig } from 'drizzle-orm/pg-core'
import { GraphQLError } from 'graphql'
import { z } from 'zod'
import { type Relations, relations } from '../db/relations.js'
import type { Context } from './context.js'
import { AmountScalar, DateTimeScalar } from './scalars.js'

/** Connection page sizes: what `first`/`last` default to, and the most they may ask for. */
export const PAGE_SIZE_DEFAULT = 20
export const PAGE_SIZE_MAX = 100

export interface PothosTypes {
  Context: Context
  // Fields are non-null unless they say otherwise: a client can rely on what it asked for.
  DefaultFieldNullability: false
  DefaultEdgesNullability: false
  DefaultNodeNullability: false
  DrizzleRelations: Relations
  AuthScopes: {
    public: boolean
    signedIn: boolean
    creator: boolean
    accountant: boolean
    admin: boolean
  }
  Scalars: {
    Amount: { Input: bigint; Output: bigint | number }
    DateTime: { Input: Date; Output: Date | string }
  }
}

// A page size past the maximum is refused, not silently cut: a client that
// asked for 500 rows and got 100 would think it had them all.
const pageSize = z
  .number()
  .int()
  .min(0, { message: 'must not be negative' })
  .max(PAGE_SIZE_MAX, { message: `must be at most ${PAGE_SIZE_MAX}` })
  .nullish()

export const builder = new SchemaBuilder<PothosTypes>({
  // scope-auth first, so authorization runs before anything else wraps a resolver.
  plugins: [ScopeAuthPlugin, RelayPlugin, DrizzlePlugin, ValidationPlugin],
  defaultFieldNullability: false,
  scopeAuth: {
    // Subscriptions are authorized once, when they start, not per event.
    authorizeOnSubscribe: true,
    authScopes: (ctx) => ({
      public: true,
      signedIn: ctx.viewer !== null,
      creator: ctx.viewer?.roles.includes('creator') ?? false,
      accountant: ctx.viewer?.roles.includes('accountant') ?? false,
      admin: ctx.viewer?.roles.includes('admin') ?? false,
    }),
    // The contract: missing credentials are UNAUTHENTICATED, missing rights FORBIDDEN.
    unauthorizedError: (_parent, ctx) =>
      ctx.viewer === null
        ? new GraphQLError('Sign in to do this.', { extensions: { code: 'UNAUTHENTICATED' } })
        : new GraphQLError('Not allowed.', { extensions: { code: 'FORBIDDEN' } }),
  },
  relay: {
    cursorType: 'String',
    clientMutationId: 'omit',
    // No type implements Node yet; turn these on with the first one that does.
    nodeQueryOptions: false,
    nodesQueryOptions: false,
    edgesFieldOptions: { nullable: false },
    nodeFieldOptions: { nullable: false },
    firstArgOptions: { validate: pageSize },
    lastArgOptions: { validate: pageSize },
  },
  drizzle: {
    client: (ctx) => ctx.db,
    getTableConfig,
    relations,
    defaultConnectionSize: PAGE_SIZE_DEFAULT,
    maxConnectionSize: PAGE_SIZE_MAX,
  },
  validation: {
    validationError: (failure) =>
      new GraphQLError(
        failure.issues
          .map((issue) => {
            const path = (issue.path ?? []).map((p) => (typeof p === 'object' ? p.key : p)).join('.')
            return path ? `${path}: ${issue.message}` : issue.message
          })
          .join('; '),
        { extensions: { code: 'BAD_USER_INPUT' } },
      ),
  },
})

builder.addScalarType('Amount', AmountScalar)
builder.addScalarType('DateTime', DateTimeScalar)

builder.queryType({})
builder.mutationType({})
