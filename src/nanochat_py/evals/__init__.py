"""Evaluation: nanochat's report card (CORE, ChatCORE, bits per byte) for any checkpoint, and its model card."""
