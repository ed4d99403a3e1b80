"""``python -m data_pipeline.tokenize``: see data_pipeline/tokenize/cli.py."""

if __name__ == "__main__":
    # Imported here, not above: worker processes (spawned) re-import this module as
    # __mp_main__ and need none of the command's imports (Hydra and the rest).
    from data_pipeline.tokenize.cli import main

    main()
