import { inArray } from 'drizzle-orm'
import type { Db } from '../db/client.js'
import { rechargeOrders } from '../db/schema.js'
import type { RechargeOrder, RechargeService, ReconciliationProblem } from './service.js'

// The reconciliation report as accountants read it: every order whose books
// and payment disagree, with the order itself. Read-only: the settling part
// of reconciliation (`npm run reconcile`, the 10-minute job) is not here.

/** What RechargeService.discrepancies() lists at most. */
export const RECONCILIATION_PROBLEMS_MAX = 1000

export interface ReconciliationFinding {
  kind: Exclude<ReconciliationProblem['kind'], 'PROVIDER_ERROR'>
  message: string
  order: RechargeOrder
}

export interface ReconciliationReportShape {
  checkedAt: Date
  findings: ReconciliationFinding[]
  /** True when the list stopped at its maximum: there may be more. */
  limitReached: boolean
}

export async function reconciliationReport(
  db: Db,
  recharge: RechargeService,
): Promise<ReconciliationReportShape> {
  const checkedAt = new Date()
  const problems = await recharge.discrepancies()
  const ids = [...new Set(problems.map((p) => p.orderId))]
  const orders =
    ids.length === 0 ? [] : await db.select().from(rechargeOrders).where(inArray(rechargeOrders.id, ids))
  const byId = new Map(orders.map((o) => [o.id, o]))
  const findings: ReconciliationFinding[] = []
  for (const p of problems) {
    const order = byId.get(p.orderId)
    // discrepancies() reads the stored flags only; a provider error belongs to a reconcile run.
    if (order && p.kind !== 'PROVIDER_ERROR') findings.push({ kind: p.kind, message: p.message, order })
  }
  // Oldest order first; the id breaks ties (one statement's orders share a creation time).
  const order = (f: ReconciliationFinding) => `${f.order.createdAt} ${f.order.id}`
  findings.sort((a, b) => (order(a) < order(b) ? -1 : order(a) > order(b) ? 1 : 0))
  return { checkedAt, findings, limitReached: problems.length >= RECONCILIATION_PROBLEMS_MAX }
}
