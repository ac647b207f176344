"""Conversation sessions: the store protocol, its memory, sqlite and redis
implementations, and history trimming."""
