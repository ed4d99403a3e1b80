"""Export: consolidated safetensors and a Hugging Face ``LlamaForCausalLM`` directory
(``python -m pretrain.export``)."""
