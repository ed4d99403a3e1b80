"""Files for Hugging Face ``transformers`` next to ``tokenizer.model``, so that
``AutoTokenizer.from_pretrained(dir)`` loads the same tokenizer offline with the same ids.

transformers is a dev extra: without it the export is skipped with a warning.
"""

from __future__ import annotations

import logging
from pathlib import Path

import sentencepiece as spm

from data_pipeline.formats.special_tokens import SpecialTokens

log = logging.getLogger(__name__)


def export_transformers_tokenizer(directory: Path, special_tokens: SpecialTokens) -> bool:
    """Write ``tokenizer.json`` and ``tokenizer_config.json`` into ``directory``; False if skipped."""
    try:
        from transformers import LlamaTokenizer
    except ImportError:
        log.warning(
            "transformers is not installed: wrote tokenizer.model only, without the Hugging Face files; "
            "`pip install transformers` (or the project's [dev] extra) and re-run, or set hf_export=false"
        )
        return False
    processor = spm.SentencePieceProcessor(model_file=str(directory / "tokenizer.model"))
    piece = processor.id_to_piece
    # transformers 5 needs from_pretrained(dir): LlamaTokenizer(vocab_file=...) yields a 4-token vocab.
    # No prefix space, legacy=False and split_special_tokens=True make its ids equal SentencePiece's,
    # also for text that contains a literal "<mask>" or "<s>".
    tokenizer = LlamaTokenizer.from_pretrained(
        str(directory),
        local_files_only=True,
        unk_token=piece(special_tokens.unk_id),
        bos_token=piece(special_tokens.bos_id),
        eos_token=piece(special_tokens.eos_id),
        pad_token=piece(special_tokens.pad_id),
        mask_token=piece(special_tokens.mask_id),
        extra_special_tokens=[piece(i) for i in special_tokens.sentinel_ids],
        add_prefix_space=False,
        legacy=False,
        split_special_tokens=True,
    )
    tokenizer.save_pretrained(str(directory))
    return True
