-- A ledger transaction's database transaction id (xid) is assigned before
-- its id is drawn from the sequence, whoever inserts it.
--
-- The sealer (src/audit/horizon.ts) decides that a range of ids is closed
-- — no database transaction still in flight can add a ledger transaction
-- inside it — by waiting for every xid assigned before it looked. That is
-- sound only if whoever holds an id already held an xid when it drew the id.
-- The engine locks accounts first (an xid), but a bare INSERT as the first
-- statement of a transaction evaluates the identity default (nextval) before
-- the xact_id default (txid_current()) assigns the xid. A BEFORE STATEMENT
-- trigger fires before any row's defaults are evaluated: it assigns the xid
-- first. Once per INSERT statement, however many rows it carries.
CREATE FUNCTION ledger_transactions_assign_xid() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM txid_current();
  RETURN NULL;
END
$$;
--> statement-breakpoint
CREATE TRIGGER ledger_transactions_assign_xid BEFORE INSERT ON ledger_transactions
  FOR EACH STATEMENT EXECUTE FUNCTION ledger_transactions_assign_xid();
