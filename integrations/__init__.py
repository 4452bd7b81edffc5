"""End-to-end checks: meshprop in real servers, chained over real sockets.

``_mesh`` starts a chain of services (FastAPI on uvicorn, Flask on waitress, aiohttp on its own
server) in separate processes; ``services`` holds those services; ``demo`` prints what every hop
received. The tests here drive the same chain that ``make demo`` shows.
"""
