"""`python -m reidcli`: the same CLI as `reid`, also the torchrun entry point."""

from reidcli.cli import main

if __name__ == "__main__":
    main()
