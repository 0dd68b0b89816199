"""The HTTP API (FastAPI): one router per resource; this package never imports torch."""
