"""``python -m softops``: the showcase (see ``softops.showcase.main``)."""

from softops.showcase.main import main

if __name__ == "__main__":
    main()
