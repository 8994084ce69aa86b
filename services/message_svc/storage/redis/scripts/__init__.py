"""The Lua scripts of the Redis message store (package data: ``*.lua``)."""
