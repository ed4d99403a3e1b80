"""``python -m data_pipeline.train_tokenizer input=<dir|glob> output_dir=<dir> vocab_size=N``:
the command; the trainer is data_pipeline/tokenizer/train.py."""

from data_pipeline.tokenizer.train import main

if __name__ == "__main__":
    main()
