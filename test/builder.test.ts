import { type GraphQLSchema, graphql } from 'graphql'
import { beforeAll, describe, expect, it } from 'vitest'
import { builder, PAGE_SIZE_DEFAULT, PAGE_SIZE_MAX } from '../src/graphql/builder.js'
import type { Context, Viewer } from '../src/graphql/context.js'

// The builder's shared behaviour, on fields defined here only: this file has
// its own module instance, so the real schema never sees them.

let schema: GraphQLSchema

beforeAll(() => {
  builder.queryFields((t) => ({
    numbers: t.connection({
      type: 'Int',
      resolve: (_root, args) => {
        const size = args.first ?? PAGE_SIZE_DEFAULT
        return {
          edges: Array.from({ length: size }, (_, i) => ({ cursor: `c${i}`, node: i })),
          pageInfo: { hasNextPage: false, hasPreviousPage: false, startCursor: null, endCursor: null },
        }
      },
    }),
    secret: t.string({ authScopes: { signedIn: true }, resolve: () => 'for viewers' }),
    books: t.string({ authScopes: { accountant: true }, resolve: () => 'for accountants' }),
  }))
  // builder.ts declares the Mutation type; the capabilities give it its fields.
  builder.mutationFields((t) => ({ noop: t.boolean({ resolve: () => true }) }))
  schema = builder.toSchema()
})

const run = (source: string, viewer: Viewer | null = null) =>
  graphql({ schema, source, contextValue: { viewer, requestId: 't' } as unknown as Context })

describe('connections', () => {
  it(`default to ${PAGE_SIZE_DEFAULT} and allow up to ${PAGE_SIZE_MAX}`, async () => {
    const byDefault = await run('{ numbers { edges { node } } }')
    expect(byDefault.data).toMatchObject({ numbers: { edges: expect.any(Array) } })
    expect((byDefault.data as { numbers: { edges: unknown[] } }).numbers.edges).toHaveLength(
      PAGE_SIZE_DEFAULT,
    )
    const most = await run(`{ numbers(first: ${PAGE_SIZE_MAX}) { edges { node } } }`)
    expect(most.errors).toBeUndefined()
  })

  it('refuse a page larger than the maximum, or negative', async () => {
    const tooMany = await run(`{ numbers(first: ${PAGE_SIZE_MAX + 1}) { edges { node } } }`)
    expect(tooMany.errors?.[0]?.message).toBe(`first: must be at most ${PAGE_SIZE_MAX}`)
    expect(tooMany.errors?.[0]?.extensions.code).toBe('BAD_USER_INPUT')
    const negative = await run('{ numbers(last: -1) { edges { node } } }')
    expect(negative.errors?.[0]?.message).toBe('last: must not be negative')
  })
})

describe('auth scopes', () => {
  it('answer UNAUTHENTICATED without a viewer', async () => {
    const result = await run('{ secret }')
    expect(result.errors?.[0]?.extensions.code).toBe('UNAUTHENTICATED')
  })

  it('answer FORBIDDEN to a viewer without the role', async () => {
    const viewer: Viewer = { userId: 'u1', roles: ['creator'] }
    expect((await run('{ secret }', viewer)).data).toEqual({ secret: 'for viewers' })
    const result = await run('{ books }', viewer)
    expect(result.errors?.[0]?.extensions.code).toBe('FORBIDDEN')
    expect((await run('{ books }', { userId: 'u2', roles: ['accountant'] })).data).toEqual({
      books: 'for accountants',
    })
  })
})
