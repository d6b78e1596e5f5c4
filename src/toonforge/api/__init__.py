"""The HTTP API: Wiro-compatible routes, auth, envelope, WebSocket. Never imports torch."""
