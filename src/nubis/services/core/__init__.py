"""The few things every capability shares: errors, look-ups and paging, the caller
(`Principal`), task submission, events."""
