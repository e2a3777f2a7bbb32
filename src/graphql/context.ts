import type { Db } from '../db/client.js'
import type { Services } from '../services.js'

export const ROLES = ['creator', 'accountant', 'admin'] as const
export type Role = (typeof ROLES)[number]

/** Who is asking. Every signed-in user is a viewer; roles add capabilities. */
export interface Viewer {
  userId: string
  roles: Role[]
}

/** What every resolver gets. One per GraphQL request. */
export interface Context {
  db: Db
  /** null until a valid bearer token says otherwise. */
  viewer: Viewer | null
  requestId: string
  services: Services
  /**
   * Ends this client's connection (a WebSocket closes with 4421, an SSE
   * response is cut): for a subscriber that fell too far behind.
   */
  disconnectSlowConsumer?: () => void
  /**
   * Calls `release` once this request's client has gone away (an HTTP
   * connection closed): a subscription over SSE ends then, not at its next
   * event. Absent over WebSocket, where graphql-ws ends subscriptions itself.
   */
  onClientGone?: (release: () => void) => void
}
