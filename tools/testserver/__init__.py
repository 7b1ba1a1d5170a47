"""The private Dovecot test server behind tools/test-server."""
