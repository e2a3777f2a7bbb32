import type { Viewer } from '../graphql/context.js'
import { AuthenticationError, type TokenVerifier } from './tokens.js'
import type { UserService } from './users.js'

const BEARER = /^Bearer +([A-Za-z0-9._~+/=-]+) *$/i

/**
 * Turns credentials into a viewer: the HTTP `Authorization` header, or a
 * WebSocket's `connectionParams.authorization`, both `Bearer <token>`.
 * No credentials: anonymous (null). Credentials that do not check out throw
 * an AuthenticationError: a caller who tried to sign in is never silently
 * treated as anonymous.
 */
export class Authenticator {
  constructor(
    private readonly tokens: TokenVerifier,
    private readonly users: UserService,
  ) {}

  async viewerFor(authorization: unknown): Promise<Viewer | null> {
    if (authorization === undefined || authorization === null) return null
    if (typeof authorization !== 'string') throw new AuthenticationError('authorization must be a string')
    const match = BEARER.exec(authorization)
    if (!match?.[1]) throw new AuthenticationError('authorization must be "Bearer <token>"')
    const claims = await this.tokens.verify(match[1])
    const userId = await this.users.signIn(claims)
    return { userId, roles: claims.roles }
  }
}
