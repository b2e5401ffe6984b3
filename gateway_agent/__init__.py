"""The outputguard.egress gateway agent: follows the server and keeps the kernel's sets equal to it."""

__version__ = "0.1.0"
