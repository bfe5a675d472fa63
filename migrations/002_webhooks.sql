-- Webhook deliveries seen, by X-Atlassian-Webhook-Identifier, written in the same
-- transaction as the status change, so that a retried delivery writes nothing twice.
CREATE TABLE webhook_deliveries (
    id          text PRIMARY KEY,
    event       text NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhook_deliveries_received_at ON webhook_deliveries (received_at);

-- Signed deliveries that could not be used, kept raw so an operator can see what Jira sent.
CREATE TABLE dead_letters (
    id          bigserial PRIMARY KEY,
    delivery_id text,
    error       text NOT NULL,
    body        text NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX dead_letters_received_at ON dead_letters (received_at);
