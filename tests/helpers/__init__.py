"""Test doubles and tiny model folders shared by the test packages."""
