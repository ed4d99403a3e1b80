"""``python -m data_pipeline.curate``: see data_pipeline/curate/cli.py."""

from data_pipeline.curate.cli import main

if __name__ == "__main__":
    main()
