import { expect } from 'vitest'
import { type GraphQLErrorBody, graphql, type TestApp } from './app.js'

// Signed-in people for end-to-end tests: each has a token and calls the API
// over HTTP as a client would.

export interface Actor {
  token: string
  userId: string
  /** Runs an operation as this actor; resolves to data, failing the test on GraphQL errors. */
  ok<T = Record<string, any>>(query: string, variables?: Record<string, unknown>): Promise<T>
  /** Runs an operation as this actor; resolves to the whole response body. */
  raw(
    query: string,
    variables?: Record<string, unknown>,
  ): Promise<{ data?: Record<string, any> | null; errors?: GraphQLErrorBody[] }>
}

let counter = 0

export async function signIn(
  app: TestApp,
  handle: string,
  roles: ('creator' | 'accountant' | 'admin')[] = [],
): Promise<Actor> {
  counter++
  const token = await app.token({
    sub: `test|${handle}|${process.pid}|${counter}`,
    preferred_username: handle,
    name: handle[0]?.toUpperCase() + handle.slice(1),
    roles,
  })
  const headers = { authorization: `Bearer ${token}` }
  const raw = async (query: string, variables?: Record<string, unknown>) =>
    (await graphql(app, query, variables, headers)).body as {
      data?: Record<string, any> | null
      errors?: GraphQLErrorBody[]
    }
  const ok = async <T>(query: string, variables?: Record<string, unknown>) => {
    const body = await raw(query, variables)
    expect(body.errors, JSON.stringify(body.errors)).toBeUndefined()
    return body.data as T
  }
  const me = await ok<{ me: { user: { id: string } } }>('{ me { user { id } } }')
  return { token, userId: me.me.user.id, ok, raw }
}

export const anonymous = (app: TestApp) => ({
  raw: async (query: string, variables?: Record<string, unknown>) =>
    (await graphql(app, query, variables)).body as {
      data?: Record<string, any> | null
      errors?: GraphQLErrorBody[]
    },
})
