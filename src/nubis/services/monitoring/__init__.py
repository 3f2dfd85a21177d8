"""Statistics collection, the metrics store, alarms and their notifications, webhooks,
metering, the overview."""
