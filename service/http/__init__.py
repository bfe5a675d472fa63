"""The HTTP front door: the Starlette app, its routes, middleware and errors."""
