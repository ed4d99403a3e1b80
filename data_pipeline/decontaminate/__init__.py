"""Evaluation-task text out of the training data, and a record of what stays in it.

ngrams.py       the GPT-3 normalization and 64-bit word n-gram hashes (shared by all below)
task_items.py   the text of every item of an evaluation task file
config.py       ``decontaminate.*`` of curation
index.py        the tasks' n-gram index (sorted hashes, memory-mapped by the units)
filter.py       the curation step: remove or redact contaminated documents
report.py       report.json's ``decontamination`` section
fingerprint.py  the train split's n-gram fingerprint that tokenize writes and evaluation reads
"""
