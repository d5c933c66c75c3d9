-- /metrics counts imports by status on every scrape: with deleted_at in the
-- index the count reads the index alone, not every row of the table.
CREATE INDEX imports_by_status_deleted ON imports (status, deleted_at);
