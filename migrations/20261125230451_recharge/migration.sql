CREATE TYPE "inbox_status" AS ENUM('pending', 'processed', 'ignored', 'parked');--> statement-breakpoint
CREATE TYPE "payment_provider" AS ENUM('stripe', 'paypal');--> statement-breakpoint
CREATE TYPE "recharge_status" AS ENUM('pending', 'succeeded', 'failed', 'canceled', 'expired', 'partially_refunded', 'refunded', 'disputed');--> statement-breakpoint
CREATE TABLE "recharge_orders" (
	"id" uuid PRIMARY KEY DEFAULT gen_random_uuid(),
	"user_id" uuid NOT NULL,
	"package_id" uuid NOT NULL,
	"provider" "payment_provider" NOT NULL,
	"status" "recharge_status" DEFAULT 'pending'::"recharge_status" NOT NULL,
	"coins" bigint NOT NULL,
	"bonus_coins" bigint NOT NULL,
	"price_minor" bigint NOT NULL,
	"currency" text NOT NULL,
	"idempotency_key" text NOT NULL,
	"provider_reference" text,
	"client_secret" text,
	"approval_url" text,
	"capture_id" text,
	"fee_minor" bigint,
	"refunded_minor" bigint DEFAULT 0 NOT NULL,
	"clawed_back_coins" bigint DEFAULT 0 NOT NULL,
	"dispute_id" text,
	"dispute_status" text,
	"dispute_hold_id" bigint,
	"mismatch" text,
	"credit_transaction_id" bigint,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL,
	"completed_at" timestamp with time zone,
	CONSTRAINT "recharge_orders_amounts" CHECK ("coins" > 0 AND "bonus_coins" >= 0 AND "price_minor" > 0),
	CONSTRAINT "recharge_orders_refunded" CHECK ("refunded_minor" >= 0 AND "refunded_minor" <= "price_minor"),
	CONSTRAINT "recharge_orders_currency_format" CHECK ("currency" ~ '^[A-Z]{3}$')
);
--> statement-breakpoint
CREATE TABLE "webhook_events" (
	"id" bigint PRIMARY KEY GENERATED ALWAYS AS IDENTITY (sequence name "webhook_events_id_seq" INCREMENT BY 1 MINVALUE 1 MAXVALUE 9223372036854775807 START WITH 1 CACHE 1),
	"provider" "payment_provider" NOT NULL,
	"event_id" text NOT NULL,
	"type" text NOT NULL,
	"payload" jsonb NOT NULL,
	"status" "inbox_status" DEFAULT 'pending'::"inbox_status" NOT NULL,
	"attempts" integer DEFAULT 0 NOT NULL,
	"next_attempt_at" timestamp with time zone DEFAULT now() NOT NULL,
	"lease_until" timestamp with time zone,
	"last_error" text,
	"received_at" timestamp with time zone DEFAULT now() NOT NULL,
	"processed_at" timestamp with time zone
);
--> statement-breakpoint
CREATE UNIQUE INDEX "recharge_orders_user_key" ON "recharge_orders" ("user_id","idempotency_key");--> statement-breakpoint
CREATE UNIQUE INDEX "recharge_orders_provider_reference" ON "recharge_orders" ("provider","provider_reference");--> statement-breakpoint
CREATE INDEX "recharge_orders_status_idx" ON "recharge_orders" ("status","created_at");--> statement-breakpoint
CREATE INDEX "recharge_orders_user_idx" ON "recharge_orders" ("user_id","created_at");--> statement-breakpoint
CREATE UNIQUE INDEX "webhook_events_provider_event" ON "webhook_events" ("provider","event_id");--> statement-breakpoint
CREATE INDEX "webhook_events_due_idx" ON "webhook_events" ("next_attempt_at") WHERE "status" = 'pending';--> statement-breakpoint
ALTER TABLE "recharge_orders" ADD CONSTRAINT "recharge_orders_user_id_users_id_fkey" FOREIGN KEY ("user_id") REFERENCES "users"("id");--> statement-breakpoint
ALTER TABLE "recharge_orders" ADD CONSTRAINT "recharge_orders_package_id_coin_packages_id_fkey" FOREIGN KEY ("package_id") REFERENCES "coin_packages"("id");--> statement-breakpoint
ALTER TABLE "recharge_orders" ADD CONSTRAINT "recharge_orders_dispute_hold_id_ledger_holds_id_fkey" FOREIGN KEY ("dispute_hold_id") REFERENCES "ledger_holds"("id");--> statement-breakpoint
ALTER TABLE "recharge_orders" ADD CONSTRAINT "recharge_orders_GmuVML2PWkZ0_fkey" FOREIGN KEY ("credit_transaction_id") REFERENCES "ledger_transactions"("id");