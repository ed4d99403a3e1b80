"""``python -m data_pipeline.tokenize``: see data_pipeline/tokenize/cli.py."""
from data_pipeline.tokenize.cli import main

if __name__ == "__main__":
    main()
