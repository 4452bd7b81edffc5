"""The permanent stress harness: hostile requests against real servers, isolation under
thousands of requests in flight, abandoned WSGI streams, pipelining, and a hypothesis run, each
judged by an oracle written from the design (``stress.oracle``). ``make stress`` runs it."""
