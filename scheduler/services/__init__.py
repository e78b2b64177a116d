"""Use cases, one module per resource. Each function takes a session, the caller and plain
values, checks the rules, writes, and records what an operator changed in the audit log."""
