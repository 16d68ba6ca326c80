"""Client access control: who the client is (credentials), what it may do (rules),
enforced by one ASGI middleware (middleware.py); and the TLS listener's certificates."""
