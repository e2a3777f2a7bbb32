-- Who posted, voided or expired a hold and why (a payout's reviewer and reason). The
-- holds' guard (ledger_guards) refuses any update once a hold has left pending, so it
-- is written once, in that move.
ALTER TABLE "ledger_holds" ADD COLUMN "resolution" jsonb;