"""Zaqar v2's WebSocket API (contract §7) over the gateway's shared operations."""
