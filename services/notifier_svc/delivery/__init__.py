"""Delivery of pending notifications: the dispatcher and one sender per subscriber type."""
