-- Rows written by POST /notes. request_id is deliberately not unique: the endpoint is not idempotent,
-- so a request a proxy sent twice shows up as two rows (the load tests count them).
CREATE TABLE notes (
    id bigserial PRIMARY KEY,
    request_id text NOT NULL,
    body text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX notes_request_id ON notes (request_id);
