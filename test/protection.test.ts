import {
  GraphQLBoolean,
  GraphQLList,
  GraphQLNonNull,
  GraphQLObjectType,
  GraphQLSchema,
  GraphQLString,
  getIntrospectionQuery,
} from 'graphql'
import pino from 'pino'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { Config } from '../src/config.js'
import type { Context } from '../src/graphql/context.js'
import { buildApp } from '../src/http/server.js'
import { graphql, startTestApp, type TestApp } from './support/app.js'

// Each limit on what one request may ask, tested with a request past it.
// (Depth, aliases and the body size are tested in catalog.test.ts.)
//
// No mutation exists yet, so the rate limit is tested on a probe schema
// served by a second server over the same database and services; so is the
// viewer the context hands to resolvers.

const probeSchema = new GraphQLSchema({
  query: new GraphQLObjectType<unknown, Context>({
    name: 'Query',
    fields: {
      viewer: {
        type: new GraphQLObjectType({
          name: 'Viewer',
          fields: {
            userId: { type: new GraphQLNonNull(GraphQLString) },
            roles: { type: new GraphQLNonNull(new GraphQLList(new GraphQLNonNull(GraphQLString))) },
          },
        }),
        resolve: (_root, _args, ctx) => ctx.viewer,
      },
    },
  }),
  mutation: new GraphQLObjectType({
    name: 'Mutation',
    fields: { touch: { type: GraphQLBoolean, resolve: () => true } },
  }),
})

const RATE_PER_SECOND = 1
const BURST = 3

interface Server {
  url: string
  stop(): Promise<void>
}

let app: TestApp
let probe: Server
let closed: Server

/** Another server over `app`'s database and services, with its own schema or configuration. */
async function serveAlso(overrides: { schema?: GraphQLSchema; config?: Partial<Config> }): Promise<Server> {
  const built = buildApp({
    config: { ...app.config, ...overrides.config },
    database: app.database,
    services: app.services,
    logger: pino({ level: 'silent' }),
    shutdownGraceMs: 500,
    schema: overrides.schema,
  })
  const { port } = await built.start()
  return { url: `http://127.0.0.1:${port}`, stop: () => built.stop() }
}

beforeAll(async () => {
  app = await startTestApp()
  probe = await serveAlso({
    schema: probeSchema,
    config: { rateLimit: { mutationsPerSecond: RATE_PER_SECOND, mutationsBurst: BURST } },
  })
  closed = await serveAlso({ config: { graphql: { introspection: false } } })
}, 60_000)

afterAll(async () => {
  await probe?.stop()
  await closed?.stop()
  await app?.stop()
})

const bearer = async (sub: string, roles: string[] = []) => ({
  authorization: `Bearer ${await app.token({ sub, roles })}`,
})

describe('query limits (graphql-armor)', () => {
  it('refuses a query costing more than 5000', async () => {
    const fragment = 'fragment G on Gift { id name coinCost imageUrl active }'
    const query = (spreads: number) => `{ gifts { ${'...G '.repeat(spreads)} } } ${fragment}`
    const fine = await graphql(app, query(10))
    expect(fine.body.errors).toBeUndefined()
    const { body } = await graphql(app, query(400))
    expect(body.data ?? null).toBeNull()
    expect(body.errors?.[0]?.message).toMatch(/^Syntax Error: Query Cost limit of 5000 exceeded, found \d+/)
  })

  it('refuses a query of more than 2000 tokens', async () => {
    // (Far below the limit: graphql-js itself gives up comparing ~2000 repeated fields.)
    const fine = await graphql(app, `{ gifts { ${'id '.repeat(500)} } }`)
    expect(fine.body.errors).toBeUndefined()
    const { body } = await graphql(app, `{ gifts { ${'id '.repeat(2100)} } }`)
    expect(body.data ?? null).toBeNull()
    expect(body.errors?.[0]?.message).toBe('Syntax Error: Token limit of 2000 exceeded.')
  })

  it('refuses more than 50 directives', async () => {
    const query = (n: number) => `{ gifts { id ${'@include(if: true) '.repeat(n)} } }`
    expect((await graphql(app, query(50))).body.errors?.[0]?.message ?? '').not.toMatch(/Directives limit/)
    const { body } = await graphql(app, query(51))
    expect(body.data ?? null).toBeNull()
    expect(body.errors?.[0]?.message).toBe('Syntax Error: Directives limit of 50 exceeded, found 51.')
  })
})

describe('the viewer', () => {
  it('is null without a token, and the token’s user with one', async () => {
    expect((await graphql(probe, '{ viewer { userId } }')).body).toEqual({ data: { viewer: null } })
    const { body } = await graphql<{ viewer: { userId: string; roles: string[] } }>(
      probe,
      '{ viewer { userId roles } }',
      undefined,
      await bearer('probe-viewer', ['accountant', 'nonsense']),
    )
    expect(body.data?.viewer.roles).toEqual(['accountant'])
    expect(body.data?.viewer.userId).toMatch(/^[0-9a-f-]{36}$/)
  })
})

describe('mutation rate limit', () => {
  const touch = (headers: Record<string, string> = {}) =>
    fetch(`${probe.url}/graphql`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'application/json', ...headers },
      body: JSON.stringify({ query: 'mutation { touch }' }),
    })

  /** Sends `count` mutations at once; the statuses, sorted. */
  const burst = async (count: number, headers: Record<string, string> = {}) =>
    (await Promise.all(Array.from({ length: count }, () => touch(headers)))).map((r) => r.status).sort()

  it(`lets a user through ${BURST} at once, then refuses with RATE_LIMITED (429)`, async () => {
    const headers = await bearer('busy-user')
    const statuses = await burst(BURST + 3, headers)
    // The burst, and at most one more token that flowed in meanwhile.
    const passed = statuses.filter((s) => s === 200).length
    expect(passed).toBeGreaterThanOrEqual(BURST)
    expect(passed).toBeLessThanOrEqual(BURST + 1)
    expect(statuses.filter((s) => s !== 200).every((s) => s === 429)).toBe(true)

    const refused = await touch(headers)
    expect(refused.status).toBe(429)
    expect(refused.headers.get('retry-after')).toBe('1')
    const body = (await refused.json()) as {
      data?: unknown
      errors: { message: string; extensions: unknown }[]
    }
    expect(body.data ?? null).toBeNull()
    expect(body.errors).toEqual([
      {
        message: 'Too many mutations: slow down and try again shortly.',
        extensions: { code: 'RATE_LIMITED' },
      },
    ])
  })

  it('refills: a second later a mutation passes again', async () => {
    const headers = await bearer('patient-user')
    await burst(BURST + 1, headers)
    expect((await touch(headers)).status).toBe(429)
    await new Promise((resolve) => setTimeout(resolve, 1100 / RATE_PER_SECOND))
    expect((await touch(headers)).status).toBe(200)
  })

  it('counts each user separately, and anonymous callers by IP address', async () => {
    await burst(BURST + 1, await bearer('greedy-user'))
    expect((await touch(await bearer('greedy-user'))).status).toBe(429)
    expect((await touch(await bearer('other-user'))).status).toBe(200)

    const anonymous = await burst(BURST + 2)
    expect(anonymous).toContain(429)
    expect((await touch()).status).toBe(429)
    // Signed in from the same address: the user's own bucket.
    expect((await touch(await bearer('same-address-user'))).status).toBe(200)
  })

  it('does not count queries', async () => {
    const headers = await bearer('reader')
    for (let i = 0; i < BURST * 3; i++) {
      const { status } = await graphql(probe, '{ viewer { userId } }', undefined, headers)
      expect(status).toBe(200)
    }
    expect((await touch(headers)).status).toBe(200)
  })
})

describe('CSRF prevention', () => {
  const query = encodeURIComponent('{ gifts { name } }')

  it('refuses a GET without the x-graphql-yoga-csrf header (403), serves it with', async () => {
    const bare = await fetch(`${app.url}/graphql?query=${query}`, { headers: { accept: 'application/json' } })
    expect(bare.status).toBe(403)
    const body = (await bare.json()) as { errors: { message: string }[] }
    expect(body.errors[0]?.message).toBe('Required CSRF header(s) not present')
    const marked = await fetch(`${app.url}/graphql?query=${query}`, {
      headers: { accept: 'application/json', 'x-graphql-yoga-csrf': '1' },
    })
    expect(marked.status).toBe(200)
  })

  it('refuses POSTs that a cross-site form could send', async () => {
    const form = await fetch(`${probe.url}/graphql`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ query: 'mutation { touch }' }).toString(),
    })
    expect(form.status).toBe(403)
    for (const contentType of ['text/plain', 'multipart/form-data; boundary=x']) {
      const response = await fetch(`${probe.url}/graphql`, {
        method: 'POST',
        headers: { 'content-type': contentType },
        body: JSON.stringify({ query: 'mutation { touch }' }),
      })
      expect(response.status, contentType).toBe(403)
    }
  })

  it('lets JSON POSTs through (browsers preflight them)', async () => {
    const { status, body } = await graphql(app, '{ gifts { id } }')
    expect(status).toBe(200)
    expect(body.errors).toBeUndefined()
  })
})

describe('introspection', () => {
  it('is refused when turned off (production default), with GraphiQL', async () => {
    for (const query of [
      getIntrospectionQuery(),
      '{ __schema { queryType { name } } }',
      '{ __type(name: "Gift") { name } }',
    ]) {
      const { body } = await graphql(closed, query)
      expect(body.data ?? null).toBeNull()
      expect(body.errors?.[0]?.message).toMatch(/introspection/i)
    }
    const ordinary = await graphql(closed, '{ gifts { name } }')
    expect(ordinary.body.errors).toBeUndefined()
    const page = await fetch(`${closed.url}/graphql`, { headers: { accept: 'text/html' } })
    expect(page.headers.get('content-type') ?? '').not.toContain('text/html')
  })

  it('is allowed when on', async () => {
    const { body } = await graphql(app, '{ __type(name: "Gift") { name } }')
    expect(body).toEqual({ data: { __type: { name: 'Gift' } } })
  })
})

describe('strings PostgreSQL cannot store', () => {
  it('refuses a NUL in a literal every time the same document comes, and serves clean ones', async () => {
    // Each document is checked once and its verdict remembered (input-guard.ts): it must hold on repeats.
    // (A lone surrogate cannot be written in a literal: the GraphQL parser refuses its escape.)
    for (let attempt = 0; attempt < 3; attempt++) {
      const { status, body } = await graphql(app, '{ __type(name: "Gift\\u0000") { name } }')
      expect(status).toBe(400)
      expect(body.errors?.[0]?.extensions?.code).toBe('BAD_USER_INPUT')
    }
    for (let attempt = 0; attempt < 3; attempt++) {
      const { body } = await graphql(app, '{ __type(name: "Gift") { name } }')
      expect(body).toEqual({ data: { __type: { name: 'Gift' } } })
    }
  })
})
