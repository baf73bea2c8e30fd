"""Integrations with the ecosystem: PEFT (LoRA), the TRL generative variant, the Hugging Face Hub."""
