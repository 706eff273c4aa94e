"""The root `conscience` command: the proxy's commands plus the offline tools that are installed."""
