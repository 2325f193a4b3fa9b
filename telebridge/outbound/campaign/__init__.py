"""Campaigns: dial a CSV of contacts with limits, retries, quiet hours and a do-not-call list, resumably.

The parts, one concept each:

* :mod:`.contacts` — reading the contacts CSV and the do-not-call file (the file format is in its docstring);
* :mod:`.quiet` — quiet hours and which timezone a contact's are counted in;
* :mod:`.scheduler` — the sans-I/O scheduler: fed rows, outcomes and the time, it answers "dial row k" or
  "wait until t" (concurrency, calls per second, retries with backoff, quiet hours);
* :mod:`.state` — the SQLite file that makes a re-run resume and never dial a finished row twice;
* :mod:`.tracking` — following a placed call to its final status through Twilio's REST API;
* :mod:`.runner` — the asyncio loop tying them together (progress bar, Ctrl-C);
* :mod:`.results` — the results CSV; :mod:`.cli` — ``telebridge campaign run``.
"""
