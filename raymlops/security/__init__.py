"""Security: the role model, the audit log, safe names, encryption at rest and artifact integrity.

See ``docs/security.md`` for the threat model, the role matrix and the operator's key procedures.
"""
