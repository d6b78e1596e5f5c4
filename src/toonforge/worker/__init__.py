"""The worker process: claim → run → outputs → events; heartbeat, kill, lease recovery."""
