"""Hugging Face checkpoints in and out: ``config.json`` ↔ our model config
(``import_config``, ``export_config``), weight names (``names``), per-rank slice reading
for ``train init_from=DIR`` (``weights``, ``init_from``) and the export directory
(``writer``). The supported families are listed in docs/hf.md."""
