"""Integrations with other libraries. Each submodule imports its library lazily, so importing
sigmoid_attn (or this package) never imports them: `sigmoid_attn.integrations.transformers`
plugs sigmoid attention into Hugging Face transformers as attn_implementation="sigmoid"."""
