"""Who may do what: principals, policies, credentials, signed tokens and the audit trail."""
