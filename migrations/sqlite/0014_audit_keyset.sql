-- The audit log is read newest first by (created_at, id): pages and the CSV
-- export's keyset chunks walk this index instead of sorting the events.
CREATE INDEX audit_events_org_time_id ON audit_events (organization_id, created_at, id);
DROP INDEX audit_events_org_time;
