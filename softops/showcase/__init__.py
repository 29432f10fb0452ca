"""The ``python -m softops`` showcase and the code behind ``examples/``.

Not part of the library's API: these modules need the ``showcase`` extra
(``pip install "softops[showcase]"``: flax, matplotlib, scikit-learn, tqdm), which the core
install does not pull in. `softops.showcase.main.main` is the command-line entry point.
"""
