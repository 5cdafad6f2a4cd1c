"""``python -m adaptseg``: the same CLI as the ``adaptseg`` console script."""

from adaptseg.cli.app import main

if __name__ == "__main__":
    main()
