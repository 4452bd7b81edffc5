"""Services for the OpenTelemetry interop test: each runs in its own process.

``python -m integrations.otel_services KIND --fd FD --spans FILE [--next URL] [options]`` serves
one hop on an inherited listening socket and writes every span it finishes to ``FILE`` as JSON
lines, where the test reads them.
"""
