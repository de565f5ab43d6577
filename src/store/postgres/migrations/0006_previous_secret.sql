-- A saved configuration's secret rotation: the secret it replaced keeps signing beside the
-- new one (Standard Webhooks carries both signatures) until `previous_secret_until`, epoch
-- milliseconds.
ALTER TABLE webhook_configs
    ADD COLUMN previous_secret       text,
    ADD COLUMN previous_secret_until bigint;
