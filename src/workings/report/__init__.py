"""Report: tables and figures of what the other stages computed; nothing here computes a result."""
