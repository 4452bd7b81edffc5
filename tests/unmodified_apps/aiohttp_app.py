import os
import sys

import aiohttp
from aiohttp import web


async def index(request: web.Request) -> web.Response:
    url = os.environ["DOWNSTREAM"] + "/from-aiohttp"
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return web.json_response({"downstream": response.status})


app = web.Application()
app.router.add_get("/{tail:.*}", index)

if __name__ == "__main__":
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]))
