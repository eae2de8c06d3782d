"""The ``channelcast`` command: thin wrappers over library functions."""
