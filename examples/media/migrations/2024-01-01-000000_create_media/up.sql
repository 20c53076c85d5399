CREATE TABLE media (
    id bigserial PRIMARY KEY,
    name text NOT NULL,
    size bigint NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now()
);
