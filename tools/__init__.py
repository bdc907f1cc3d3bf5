"""The programs around the four services: ``supervisor`` (``make run``), ``demo``, ``replay``,
``redrive``, ``taste_model`` and ``contract`` (the AsyncAPI document). None of them is a service;
the services live in ``services/``."""
