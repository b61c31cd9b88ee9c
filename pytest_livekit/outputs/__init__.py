"""What a run leaves behind.

``trace`` (trace.json), ``artifacts`` (per-call files, keep policy), ``report`` (HTML),
``baseline``, ``otel``, ``replay``, ``run_summary`` (the run's files and table),
``merge`` (shards -> one run).
"""
