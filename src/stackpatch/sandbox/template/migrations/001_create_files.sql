CREATE TABLE files (
    id serial PRIMARY KEY,
    path text NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now()
);
