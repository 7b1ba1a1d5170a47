"""The fault-injecting TCP proxy behind tools/fault-proxy."""
