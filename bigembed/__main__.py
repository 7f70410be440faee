"""``python -m bigembed ...``: the same as the ``bigembed`` command (for launchers such as torchrun)."""

from bigembed.cli.main import main

if __name__ == "__main__":
    main()
