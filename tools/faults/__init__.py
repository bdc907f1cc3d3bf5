"""Faults under load: kill -9 services and the server mid-stream, then prove that nothing was
lost, nothing doubled, and that replaying the log reproduces the live read models.

Used by ``make faults`` (``bench/faults.py``) and ``tests/faults/test_faults.py``. One module
per concern, wired together by :mod:`tools.faults.harness`:

- :mod:`~tools.faults.simulation`: the seeded load (members who pick, like, rank, toggle,
  create, rename and delete, plus invalid messages and exact re-sends), the publisher, and
  each member's expected state;
- :mod:`~tools.faults.injection`: SIGKILL of service processes and of the server, SIGSTOP
  of lease holders, restarts;
- :mod:`~tools.faults.checks`: the drain, then lost, doubled, reordered, wrongly rejected,
  read models against the simulation;
- :mod:`~tools.faults.restore`: export the log, import it into an empty server, compare;
- :mod:`~tools.faults.config`: what one run does (:class:`FaultConfig`).
"""
