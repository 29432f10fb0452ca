"""``python -m softops``: the showcase (see ``softops._showcase``)."""

from softops._showcase import main

if __name__ == "__main__":
    main()
