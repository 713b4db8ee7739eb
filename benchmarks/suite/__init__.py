"""The pieces of ``benchmarks/run.py``: the measurement a child process makes
(:mod:`.worker`), FLOP counting and the machine's peak (:mod:`.flops`), and the
table, CSV and plot written at the end (:mod:`.report`).

Nothing here imports Keras at module level except :mod:`.worker`, which runs
only inside a child process whose backend is already chosen.
"""
