"""HTTP routes, one module per resource family; each route is a few lines around a handler."""
