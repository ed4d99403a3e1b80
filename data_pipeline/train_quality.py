"""``python -m data_pipeline.train_quality positives=<dir|glob> negatives=<dir|glob> output=<file>``:
the command; the trainer is data_pipeline/filters/quality_train.py."""

from data_pipeline.filters.quality_train import main

if __name__ == "__main__":
    main()
