"""Generators: protocols and registry (base), Fusion-in-Decoder seq2seq, chat LLMs."""
