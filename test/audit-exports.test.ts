import { randomUUID } from 'node:crypto'
import { sql } from 'drizzle-orm'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { signToken } from '../src/auth/tokens.js'
import { rowsOf } from '../src/db/rows.js'
import { csvField } from '../src/http/exports.js'
import { creatorEarnings, type PostingRequest, platform, userWallet } from '../src/ledger/index.js'
import { type Actor, signIn } from './support/actors.js'
import { startTestApp, type TestApp } from './support/app.js'

// GET /exports/journal.csv and .jsonl over HTTP against the real server: the
// export is exactly the journal (every entry once, compared with the
// tables), the range filter, bad parameters, and who may export.

let app: TestApp
const actors = {} as Record<'viewer' | 'creator' | 'accountant' | 'admin', Actor>
let run: string
let keys = 0
const user = (n: number) => `00000000-0000-4000-8000-${run}${n.toString().padStart(4, '0')}`

const HEADER = [
  'transaction_id',
  'entry_id',
  'posted_at',
  'kind',
  'idempotency_key',
  'account_code',
  'direction',
  'amount',
  'unit',
  'balance_after',
]

function gift(from: number, to: number, coins: bigint, key?: string): PostingRequest {
  return {
    idempotencyKey: key ?? `export-${run}-${++keys}`,
    kind: 'gift',
    entries: [
      { account: userWallet(user(from)), direction: 'debit', amount: coins },
      { account: creatorEarnings(user(to)), direction: 'credit', amount: coins - 1n },
      { account: platform.commission, direction: 'credit', amount: 1n },
    ],
  }
}

/** The journal as the tables hold it, one row per entry, in the export's order and format. */
async function journal(range: { from?: string; to?: string } = {}): Promise<string[][]> {
  const rows = rowsOf<Record<string, string>>(
    await app.database.db.execute(sql`
      select t.id::text as transaction_id, e.id::text as entry_id,
             to_char(t.posted_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') as posted_at,
             t.kind, t.idempotency_key, a.code as account_code, e.direction::text, e.amount::text, e.unit,
             e.balance_after::text
        from ledger_entries e
        join ledger_transactions t on t.id = e.transaction_id
        join ledger_accounts a on a.id = e.account_id
       where t.posted_at >= coalesce(${range.from ?? null}::timestamptz, '-infinity')
         and t.posted_at < coalesce(${range.to ?? null}::timestamptz, 'infinity')
       order by t.id, e.id`),
  )
  return rows.map((r) => HEADER.map((h) => r[h] as string))
}

/** RFC 4180, strictly: quoted fields may hold commas, quotes (doubled), CR and LF; records end with CRLF. */
function parseCsv(text: string): string[][] {
  const records: string[][] = []
  let record: string[] = []
  let i = 0
  while (i < text.length) {
    let field = ''
    if (text[i] === '"') {
      i++
      for (;;) {
        const quote = text.indexOf('"', i)
        if (quote < 0) throw new Error('unterminated quoted field')
        field += text.slice(i, quote)
        if (text[quote + 1] === '"') {
          field += '"'
          i = quote + 2
        } else {
          i = quote + 1
          break
        }
      }
    } else {
      const end = text.slice(i).search(/,|\r\n/)
      field = end < 0 ? text.slice(i) : text.slice(i, i + end)
      if (/["\r\n]/.test(field)) throw new Error(`bare field with a quote or a line break: ${field}`)
      i += field.length
    }
    record.push(field)
    if (text[i] === ',') {
      i++
    } else if (text.startsWith('\r\n', i)) {
      records.push(record)
      record = []
      i += 2
    } else if (i < text.length) {
      throw new Error(`unexpected character at ${i}: ${JSON.stringify(text.slice(i, i + 10))}`)
    }
  }
  if (record.length > 0) throw new Error('the last record does not end with CRLF')
  return records
}

async function exportOf(
  format: 'csv' | 'jsonl',
  query = '',
  headers: Record<string, string> = { authorization: `Bearer ${actors.accountant.token}` },
) {
  const response = await fetch(`${app.url}/exports/journal.${format}${query}`, { headers })
  return { response, text: await response.text() }
}

beforeAll(async () => {
  app = await startTestApp()
  run = randomUUID().slice(0, 8)
  ;[actors.viewer, actors.creator, actors.accountant, actors.admin] = await Promise.all([
    signIn(app, 'viewer'),
    signIn(app, 'creator', ['creator']),
    signIn(app, 'accountant', ['accountant']),
    signIn(app, 'admin', ['admin']),
  ])
  const ledger = app.services.ledger
  for (const n of [1, 2, 3, 4]) {
    await ledger.post({
      idempotencyKey: `export-fund-${run}-${n}`,
      kind: 'recharge',
      entries: [
        { account: platform.coinsIssued, direction: 'debit', amount: 100_000n },
        { account: userWallet(user(n)), direction: 'credit', amount: 100_000n },
      ],
    })
  }
  // Keys a CSV must quote, and more than one page of transactions (500 a page), posted concurrently.
  await ledger.post(gift(1, 2, 10n, `comma, "quote" and\r\nline ${run}`))
  await ledger.post(gift(2, 3, 10n, `=cmd|' /C calc'!A0 ${run}`))
  await Promise.all(
    Array.from({ length: 1_100 }, (_, i) => ledger.post(gift(1 + (i % 4), 1 + ((i + 1) % 4), 5n))),
  )
  // PGlite ran in this process the whole time: let the server close the keep-alive sockets
  // that timed out meanwhile, and the client see it, before the next request reuses one.
  await new Promise((resolve) => setTimeout(resolve, 200))
})
afterAll(() => app?.stop())

describe('journal exports', () => {
  it('CSV: every entry of the journal exactly once, in order, quoted per RFC 4180', async () => {
    const { response, text } = await exportOf('csv')
    expect(response.status).toBe(200)
    expect(response.headers.get('content-type')).toBe('text/csv; charset=utf-8; header=present')
    const horizon = response.headers.get('x-journal-horizon')
    expect(response.headers.get('content-disposition')).toBe(
      `attachment; filename="journal-upto-${horizon}.csv"`,
    )
    expect(response.headers.get('cache-control')).toBe('no-store')

    const [header, ...rows] = parseCsv(text)
    expect(header).toEqual(HEADER)
    const expected = await journal()
    expect(rows.length).toBe(expected.length)
    expect(rows.length).toBeGreaterThan(3 * 1_100)
    expect(rows).toEqual(expected)
    expect(new Set(rows.map((r) => r[1])).size).toBe(rows.length)
    expect(horizon).toBe(expected.at(-1)?.[0])
    expect(text).toContain(`"comma, ""quote"" and\r\nline ${run}"`)
  })

  it('JSON lines: the same rows, amounts as exact decimal strings', async () => {
    const { response, text } = await exportOf('jsonl')
    expect(response.status).toBe(200)
    expect(response.headers.get('content-type')).toBe('application/jsonl; charset=utf-8')
    expect(text.endsWith('\n')).toBe(true)
    const lines = text.slice(0, -1).split('\n')
    const rows = lines.map((l) => JSON.parse(l) as Record<string, string>)
    expect(Object.keys(rows[0] ?? {})).toEqual(HEADER)
    expect(rows.map((r) => HEADER.map((h) => r[h]))).toEqual(await journal())
    expect(rows.every((r) => typeof r.amount === 'string' && /^\d+$/.test(r.amount))).toBe(true)
  })

  it('exports the transactions posted in [from, to) only', async () => {
    const all = await journal()
    const transactions = [...new Set(all.map((r) => r[0]))]
    const postedAt = (id: string | undefined) => all.find((r) => r[0] === id)?.[2] as string
    const from = postedAt(transactions[10])
    const to = postedAt(transactions[transactions.length - 10])
    expect(from < to).toBe(true)
    const { response, text } = await exportOf(
      'csv',
      `?from=${encodeURIComponent(from)}&to=${encodeURIComponent(to)}`,
    )
    expect(response.status).toBe(200)
    const rows = parseCsv(text).slice(1)
    const expected = await journal({ from, to })
    expect(rows).toEqual(expected)
    expect(rows.length).toBeGreaterThan(0)
    expect(rows.length).toBeLessThan(all.length)
    expect(rows.every((r) => (r[2] as string) >= from && (r[2] as string) < to)).toBe(true)
    // A range with nothing in it: the header alone.
    const empty = await exportOf('csv', '?from=2001-01-01T00:00:00Z&to=2001-01-02T00:00:00Z')
    expect(empty.text).toBe(`${HEADER.join(',')}\r\n`)
  })

  it('is a consistent cut while postings go on: every transaction up to its horizon, whole, and none after', async () => {
    let posting = true
    const writers = Array.from({ length: 4 }, async (_, w) => {
      while (posting) {
        await app.services.ledger.post(gift(1 + w, 1 + ((w + 2) % 4), 2n))
        // PGlite runs in this process: a writer that never yields would starve the server's sockets.
        await new Promise((resolve) => setTimeout(resolve, 1))
      }
    })
    try {
      for (let i = 0; i < 3; i++) {
        const { response, text } = await exportOf('csv')
        expect(response.status).toBe(200)
        const horizon = BigInt(response.headers.get('x-journal-horizon') ?? '0')
        const rows = parseCsv(text).slice(1)
        const expected = (await journal()).filter((r) => BigInt(r[0] as string) <= horizon)
        expect(rows).toEqual(expected)
      }
    } finally {
      posting = false
      await Promise.all(writers)
    }
  })

  it.each([
    ['?from=yesterday', /from: DateTime must be an RFC 3339 date-time/],
    ['?to=2026-11-25T10:00:00', /to: DateTime must be an RFC 3339 date-time with an offset/],
    ['?from=', /from: DateTime must be an RFC 3339/],
    ['?from=2026-11-26T00:00:00Z&to=2026-11-25T00:00:00Z', /from must be before to/],
    ['?from=2026-11-25T00:00:00Z&to=2026-11-25T00:00:00Z', /from must be before to/],
    ['?from=2026-11-25T00:00:00Z&from=2026-11-26T00:00:00Z', /from is given 2 times/],
    ['?form=2026-11-25T00:00:00Z', /unknown parameter "form": only from and to are allowed/],
  ])('refuses %s with 400 and says why', async (query, message) => {
    for (const format of ['csv', 'jsonl'] as const) {
      const { response, text } = await exportOf(format, query)
      expect(response.status).toBe(400)
      expect(response.headers.get('content-type')).toBe('application/json; charset=utf-8')
      expect(JSON.parse(text).error).toMatch(message)
    }
  })

  it('requires an accountant: 401 without or with a bad token, 403 for anyone else', async () => {
    const forged = await signToken(
      new TextEncoder().encode('a-key-the-server-has-never-seen-0123456789abcdef'),
      { sub: 'test|forger', roles: ['accountant'] },
      { expiresIn: '1h', issuer: app.config.jwt.issuer, audience: app.config.jwt.audience },
    )
    const expired = await app.token({ sub: 'test|late', roles: ['accountant'] }, { expiresIn: -60 })
    for (const format of ['csv', 'jsonl'] as const) {
      const none = await exportOf(format, '', {})
      expect(none.response.status).toBe(401)
      expect(none.response.headers.get('www-authenticate')).toBe('Bearer')
      for (const token of [forged, expired, 'not-a-jwt']) {
        const bad = await exportOf(format, '', { authorization: `Bearer ${token}` })
        expect(bad.response.status).toBe(401)
        expect(bad.response.headers.get('www-authenticate')).toBe('Bearer error="invalid_token"')
      }
      for (const role of ['viewer', 'creator', 'admin'] as const) {
        const denied = await exportOf(format, '', { authorization: `Bearer ${actors[role].token}` })
        expect(denied.response.status, role).toBe(403)
        expect(JSON.parse(denied.text).error).toBe('only accountants may export the journal')
      }
    }
    const post = await fetch(`${app.url}/exports/journal.csv`, {
      method: 'POST',
      headers: { authorization: `Bearer ${actors.accountant.token}` },
    })
    expect(post.status).toBe(405)
    expect(post.headers.get('allow')).toBe('GET')
  })

  it('quotes exactly the CSV fields that need it', () => {
    expect(csvField('plain')).toBe('plain')
    expect(csvField('')).toBe('')
    expect(csvField('a,b')).toBe('"a,b"')
    expect(csvField('say "hi"')).toBe('"say ""hi"""')
    expect(csvField('two\nlines')).toBe('"two\nlines"')
    expect(csvField('cr\r')).toBe('"cr\r"')
  })
})
