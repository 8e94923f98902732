"""The ``polchain`` command line."""
