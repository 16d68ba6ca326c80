"""HTTP serving pieces below the routes: zero-copy file sends under uvicorn."""
