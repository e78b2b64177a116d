"""API schemas (``XCreate`` / ``XUpdate`` / ``XPublic``) and their converters from rows."""
