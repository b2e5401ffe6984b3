"""The test suites of outputguard.egress; their shared helpers are the package tests.support."""
