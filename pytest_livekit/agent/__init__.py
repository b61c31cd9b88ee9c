"""The agent under test: in the test's process, or as livekit-agents workers.

``in_process`` (InProcessAgent), ``worker`` (AgentWorker, WorkerPool), ``substitution``
(cloud providers -> offline doubles), ``netguard``, ``vocabulary``, ``llm_rules``,
``loop_watchdog`` and ``error_log`` (faults livekit-agents only logs).
"""
