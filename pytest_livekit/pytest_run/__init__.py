"""What the plugin's hooks delegate to: pytest objects in, library calls out.

``glue`` (the run's session, collection checks, report sections), ``keys`` (stash
keys), ``outcomes`` and ``call_results`` (a test's outcome per phase, its calls
finished), ``collector`` (calls from reports, xdist too), ``limits`` (breach ->
fail or warn), ``timeout_guard`` (pytest-timeout mid-call), ``progress``.
"""
