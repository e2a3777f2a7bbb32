import { sql } from 'drizzle-orm'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { seedCatalog } from '../src/catalog/seed.js'
import { graphql, startTestApp, type TestApp } from './support/app.js'

// The contract's Catalog operation, as clients send it.
const CATALOG = /* GraphQL */ `
  query Catalog($currency: String) {
    coinPackages(currency: $currency) {
      id
      coins
      bonusCoins
      price { amount currency formatted }
    }
    gifts {
      id
      name
      coinCost
      imageUrl
    }
  }
`

interface CatalogData {
  coinPackages: {
    id: string
    coins: number
    bonusCoins: number
    price: { amount: number; currency: string; formatted: string }
  }[]
  gifts: { id: string; name: string; coinCost: number; imageUrl: string }[]
}

let app: TestApp

beforeAll(async () => {
  app = await startTestApp()
}, 60_000)

afterAll(async () => {
  await app?.stop()
})

describe('Catalog', () => {
  it('lists the coin packages in USD by default, in order, with formatted prices', async () => {
    const { status, body } = await graphql<CatalogData>(app, CATALOG)
    expect(status).toBe(200)
    expect(body.errors).toBeUndefined()
    const packages = body.data?.coinPackages ?? []
    expect(
      packages.map((p) => [p.coins, p.bonusCoins, p.price.amount, p.price.currency, p.price.formatted]),
    ).toEqual([
      [70, 0, 99, 'USD', '$0.99'],
      [350, 0, 499, 'USD', '$4.99'],
      [700, 0, 999, 'USD', '$9.99'],
      [1400, 0, 1999, 'USD', '$19.99'],
      [3500, 175, 4999, 'USD', '$49.99'],
      [7000, 700, 9999, 'USD', '$99.99'],
      [17500, 2625, 24999, 'USD', '$249.99'],
    ])
    for (const p of packages) expect(p.id).toMatch(/^[0-9a-f-]{36}$/)
  })

  it('lists the gifts from Rose to Universe', async () => {
    const { body } = await graphql<CatalogData>(app, CATALOG)
    const gifts = body.data?.gifts ?? []
    expect(gifts.map((g) => [g.name, g.coinCost])).toEqual([
      ['Rose', 1],
      ['Finger Heart', 5],
      ['Doughnut', 30],
      ['Hand Hearts', 100],
      ['Corgi', 299],
      ['Disco Ball', 1000],
      ['Sports Car', 7000],
      ['Lion', 29999],
      ['Universe', 34999],
    ])
    expect(gifts[0]?.imageUrl).toBe('/static/gifts/rose.png')
    expect(new Set(gifts.map((g) => g.id)).size).toBe(gifts.length)
  })

  it('prices in the currency asked for', async () => {
    const { body } = await graphql<CatalogData>(app, CATALOG, { currency: 'EUR' })
    expect(body.errors).toBeUndefined()
    const packages = body.data?.coinPackages ?? []
    expect(packages).toHaveLength(7)
    expect(packages[0]?.price).toEqual({ amount: 99, currency: 'EUR', formatted: '€0.99' })
    expect(packages[6]?.price).toEqual({ amount: 24999, currency: 'EUR', formatted: '€249.99' })
    // Same packages, whatever the currency.
    const usd = await graphql<CatalogData>(app, CATALOG, { currency: 'USD' })
    expect(packages.map((p) => p.id)).toEqual(usd.body.data?.coinPackages.map((p) => p.id))
  })

  it('treats an explicit null currency as the default', async () => {
    const { body } = await graphql<CatalogData>(app, CATALOG, { currency: null })
    expect(body.data?.coinPackages[0]?.price.currency).toBe('USD')
  })

  it('lists no packages in a currency nothing is priced in', async () => {
    const { body } = await graphql<CatalogData>(app, CATALOG, { currency: 'JPY' })
    expect(body.errors).toBeUndefined()
    expect(body.data?.coinPackages).toEqual([])
    expect(body.data?.gifts).toHaveLength(9)
  })

  it('refuses a currency that is not a three-letter code, saying why', async () => {
    for (const currency of ['usd', 'US', 'USDT', 'U$D', '']) {
      const { status, body } = await graphql(app, CATALOG, { currency })
      expect(status, currency).toBe(200)
      expect(body.data, currency).toBeNull()
      expect(body.errors?.[0]?.message, currency).toBe(
        'currency: must be a three-letter ISO 4217 code in capitals, e.g. "USD"',
      )
      expect(body.errors?.[0]?.extensions?.code, currency).toBe('BAD_USER_INPUT')
      expect(body.errors?.[0]?.path, currency).toEqual(['coinPackages'])
    }
  })

  it("seeds once: a second seed adds nothing and keeps an admin's edits", async () => {
    const db = app.database.db
    await db.execute(sql`update coin_packages set active = false where sku = 'coins_70'`)
    await db.execute(sql`update coin_package_prices set amount_minor = 899
      where currency = 'USD' and package_id = (select id from coin_packages where sku = 'coins_700')`)
    await db.execute(sql`delete from coin_package_prices
      where currency = 'EUR' and package_id = (select id from coin_packages where sku = 'coins_350')`)
    try {
      expect(await seedCatalog(db)).toEqual({ packagesAdded: 0, giftsAdded: 0 })
      const usd = (await graphql<CatalogData>(app, CATALOG)).body.data?.coinPackages ?? []
      expect(usd.map((p) => [p.coins, p.price.formatted]).slice(0, 2)).toEqual([
        [350, '$4.99'],
        [700, '$8.99'],
      ])
      const eur =
        (await graphql<CatalogData>(app, CATALOG, { currency: 'EUR' })).body.data?.coinPackages ?? []
      expect(eur.map((p) => p.coins)).toEqual([700, 1400, 3500, 7000, 17500])
    } finally {
      await db.execute(sql`update coin_packages set active = true where sku = 'coins_70'`)
      await db.execute(sql`update coin_package_prices set amount_minor = 999
        where currency = 'USD' and package_id = (select id from coin_packages where sku = 'coins_700')`)
      await db.execute(sql`insert into coin_package_prices (package_id, currency, amount_minor)
        select id, 'EUR', 499 from coin_packages where sku = 'coins_350'`)
    }
  })

  it('costs a bounded number of SQL queries, whatever the number of packages', async () => {
    app.queries.reset()
    const { body } = await graphql<CatalogData>(app, CATALOG)
    expect(body.errors).toBeUndefined()
    // One for the packages with their price, one for the gifts.
    expect(app.queries.statements).toHaveLength(2)
  })
})

describe('HTTP', () => {
  it('answers /health', async () => {
    const response = await fetch(`${app.url}/health`)
    expect(response.status).toBe(200)
    expect(await response.json()).toEqual({ status: 'ok' })
  })

  it('answers /ready once the database is migrated', async () => {
    const response = await fetch(`${app.url}/ready`)
    expect(response.status).toBe(200)
    expect(await response.json()).toEqual({ status: 'ready' })
  })

  it('answers /ready with 503 while migrations are missing', async () => {
    await app.database.db.execute(
      sql`alter table drizzle.__drizzle_migrations rename to __drizzle_migrations_away`,
    )
    try {
      const response = await fetch(`${app.url}/ready`)
      expect(response.status).toBe(503)
      expect(await response.json()).toEqual({ status: 'unavailable' })
    } finally {
      await app.database.db.execute(
        sql`alter table drizzle.__drizzle_migrations_away rename to __drizzle_migrations`,
      )
    }
    expect((await fetch(`${app.url}/ready`)).status).toBe(200)
  })

  it('answers 404 for unknown routes and 405 for other methods on probes', async () => {
    expect((await fetch(`${app.url}/nope`)).status).toBe(404)
    expect((await fetch(`${app.url}/`)).status).toBe(404)
    const post = await fetch(`${app.url}/health`, { method: 'POST' })
    expect(post.status).toBe(405)
    expect(post.headers.get('allow')).toBe('GET, HEAD')
  })

  it('serves GraphiQL to browsers', async () => {
    const response = await fetch(`${app.url}/graphql`, { headers: { accept: 'text/html' } })
    expect(response.status).toBe(200)
    expect(response.headers.get('content-type')).toContain('text/html')
    expect(await response.text()).toContain('graphiql')
  })

  it('answers GET /graphql queries too', async () => {
    const query = encodeURIComponent('{ gifts { name } }')
    // A GET must carry the CSRF header (see protection.test.ts).
    const response = await fetch(`${app.url}/graphql?query=${query}`, {
      headers: { accept: 'application/json', 'x-graphql-yoga-csrf': '1' },
    })
    expect(response.status).toBe(200)
    const body = (await response.json()) as { data: { gifts: { name: string }[] } }
    expect(body.data.gifts[0]?.name).toBe('Rose')
  })

  it('refuses a body over 1 MB with 413', async () => {
    const padding = 'x'.repeat(1024 * 1024 + 1)
    const response = await fetch(`${app.url}/graphql`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ query: '{ gifts { id } }', variables: { padding } }),
    })
    expect(response.status).toBe(413)
    expect(await response.json()).toEqual({ error: 'request body larger than 1048576 bytes' })
  })

  it('refuses an oversized body sent without a length (chunked) with 413', async () => {
    const chunk = new TextEncoder().encode('x'.repeat(64 * 1024))
    let sent = 0
    const body = new ReadableStream<Uint8Array>({
      pull(controller) {
        if (sent >= 20) return controller.close()
        sent++
        controller.enqueue(chunk)
      },
    })
    const response = await fetch(`${app.url}/graphql`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body,
      duplex: 'half',
    } as RequestInit)
    expect(response.status).toBe(413)
  })

  it('refuses batched operations', async () => {
    const response = await fetch(`${app.url}/graphql`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'application/json' },
      body: JSON.stringify([{ query: '{ gifts { id } }' }, { query: '{ gifts { id } }' }]),
    })
    expect(response.status).toBe(400)
  })

  it('masks unexpected errors: no internal message, no stack', async () => {
    // A real database error, whose message names the table and carries the SQL.
    const { body } = await withBrokenDatabase(() => graphql(app, '{ gifts { id } }'))
    expect(body.data).toBeNull()
    expect(body.errors).toHaveLength(1)
    const error = body.errors?.[0]
    expect(error?.message).toBe('Unexpected error.')
    expect(error?.extensions).toEqual({ code: 'INTERNAL_SERVER_ERROR' })
    expect(JSON.stringify(body)).not.toMatch(/relation|does not exist|gifts_away|select|stack|\.ts/i)
  })

  it('refuses a query deeper than the limit', async () => {
    // Introspection of one type nests as deep as a client likes; __schema (GraphiQL's) is exempt.
    const nest = (levels: number) => `${'ofType { '.repeat(levels)}name${' }'.repeat(levels)}`
    const query = (levels: number) => `{ __type(name: "Query") { fields { type { ${nest(levels)} } } } }`
    const fine = await graphql(app, query(6))
    expect(fine.body.errors).toBeUndefined()
    const { body } = await graphql(app, query(8))
    expect(body.data ?? null).toBeNull()
    expect(body.errors?.[0]?.message).toBe('Syntax Error: Query depth limit of 10 exceeded, found 12.')
  })

  it('lets GraphiQL introspect the whole schema', async () => {
    const { getIntrospectionQuery } = await import('graphql')
    const { body } = await graphql<{ __schema: { types: unknown[] } }>(app, getIntrospectionQuery())
    expect(body.errors).toBeUndefined()
    expect(body.data?.__schema.types.length).toBeGreaterThan(5)
  })

  it('refuses too many aliases', async () => {
    const aliases = Array.from({ length: 20 }, (_, i) => `g${i}: gifts { id }`).join(' ')
    const { body } = await graphql(app, `{ ${aliases} }`)
    expect(body.errors?.[0]?.message).toMatch(/aliases/i)
  })

  it('echoes a request id, or makes one', async () => {
    const given = await fetch(`${app.url}/graphql`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-request-id': 'abc-123' },
      body: JSON.stringify({ query: '{ gifts { id } }' }),
    })
    expect(given.headers.get('x-request-id')).toBe('abc-123')
    const made = await fetch(`${app.url}/graphql`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ query: '{ gifts { id } }' }),
    })
    expect(made.headers.get('x-request-id')).toMatch(/^[0-9a-f-]{36}$/)
  })
})

/** Runs `fn` while the gifts table is away, so that reading it fails inside the database. */
async function withBrokenDatabase<T>(fn: () => Promise<T>): Promise<T> {
  await app.database.db.execute(sql`alter table gifts rename to gifts_away`)
  try {
    return await fn()
  } finally {
    await app.database.db.execute(sql`alter table gifts_away rename to gifts`)
  }
}
