"""Who calls and what they may do: login and tokens, passwords, users and projects, API
keys, request signing, policy, quotas, audit, approvals, secrets at rest, login
throttling."""
