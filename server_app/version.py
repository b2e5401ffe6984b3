"""The server's version, shown in the OpenAPI document (its own module so the views need not import the app)."""

__version__ = "0.1.0"
