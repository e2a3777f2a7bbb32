CREATE TYPE "payout_status" AS ENUM('pending', 'approved', 'rejected', 'expired');--> statement-breakpoint
CREATE TABLE "ledger_seals" (
	"id" bigint PRIMARY KEY GENERATED ALWAYS AS IDENTITY (sequence name "ledger_seals_id_seq" INCREMENT BY 1 MINVALUE 1 MAXVALUE 9223372036854775807 START WITH 1 CACHE 1),
	"first_transaction_id" bigint NOT NULL,
	"last_transaction_id" bigint NOT NULL,
	"transaction_count" integer NOT NULL,
	"entry_count" integer NOT NULL,
	"content_hash" text NOT NULL,
	"previous_hash" text NOT NULL,
	"hash" text NOT NULL,
	"sealed_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "ledger_seals_range" CHECK ("first_transaction_id" <= "last_transaction_id"),
	CONSTRAINT "ledger_seals_counts" CHECK ("transaction_count" >= 0 AND "entry_count" >= 0)
);
--> statement-breakpoint
CREATE TABLE "payout_requests" (
	"id" uuid PRIMARY KEY DEFAULT gen_random_uuid(),
	"creator_id" uuid NOT NULL,
	"idempotency_key" text NOT NULL,
	"coins" bigint NOT NULL,
	"amount_minor" bigint NOT NULL,
	"currency" text NOT NULL,
	"rate_numerator" bigint NOT NULL,
	"rate_denominator" bigint NOT NULL,
	"status" "payout_status" DEFAULT 'pending'::"payout_status" NOT NULL,
	"hold_id" bigint NOT NULL,
	"requested_at" timestamp with time zone DEFAULT now() NOT NULL,
	"decided_at" timestamp with time zone,
	"decided_by" uuid,
	"decision_reason" text,
	"transaction_id" bigint,
	CONSTRAINT "payout_requests_amounts" CHECK ("coins" > 0 AND "amount_minor" > 0),
	CONSTRAINT "payout_requests_rate" CHECK ("rate_numerator" > 0 AND "rate_denominator" > 0),
	CONSTRAINT "payout_requests_currency_format" CHECK ("currency" ~ '^[A-Z]{3}$')
);
--> statement-breakpoint
CREATE UNIQUE INDEX "ledger_seals_first_key" ON "ledger_seals" ("first_transaction_id");--> statement-breakpoint
CREATE UNIQUE INDEX "ledger_seals_last_key" ON "ledger_seals" ("last_transaction_id");--> statement-breakpoint
CREATE UNIQUE INDEX "payout_requests_creator_key" ON "payout_requests" ("creator_id","idempotency_key");--> statement-breakpoint
CREATE UNIQUE INDEX "payout_requests_hold_key" ON "payout_requests" ("hold_id");--> statement-breakpoint
CREATE INDEX "payout_requests_status_idx" ON "payout_requests" ("status","requested_at");--> statement-breakpoint
CREATE INDEX "payout_requests_creator_idx" ON "payout_requests" ("creator_id","requested_at");--> statement-breakpoint
ALTER TABLE "payout_requests" ADD CONSTRAINT "payout_requests_creator_id_users_id_fkey" FOREIGN KEY ("creator_id") REFERENCES "users"("id");--> statement-breakpoint
ALTER TABLE "payout_requests" ADD CONSTRAINT "payout_requests_hold_id_ledger_holds_id_fkey" FOREIGN KEY ("hold_id") REFERENCES "ledger_holds"("id");--> statement-breakpoint
ALTER TABLE "payout_requests" ADD CONSTRAINT "payout_requests_decided_by_users_id_fkey" FOREIGN KEY ("decided_by") REFERENCES "users"("id");--> statement-breakpoint
ALTER TABLE "payout_requests" ADD CONSTRAINT "payout_requests_transaction_id_ledger_transactions_id_fkey" FOREIGN KEY ("transaction_id") REFERENCES "ledger_transactions"("id");--> statement-breakpoint
-- Seals are evidence: once written, never changed (the guard in ledger_guards).
CREATE TRIGGER ledger_seals_immutable BEFORE UPDATE OR DELETE ON ledger_seals
  FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change();
--> statement-breakpoint
CREATE TRIGGER ledger_seals_no_truncate BEFORE TRUNCATE ON ledger_seals
  FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change();
